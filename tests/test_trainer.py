import dataclasses
import json
import os
import signal
import subprocess

import numpy as np
import pytest

from helpers import (
    QUIET,
    TINY_CONFIG_FLAGS,
    assert_same_checkpoint,
    python_module,
    run_python_module,
    wait_for_checkpoint,
)
from textgen.errors import TrainingDiverged
from textgen.network.language_model import LanguageModel
from textgen.training.run_directory import RunDirectory
from textgen.training.text_trainer import TextTrainer


def test_same_seed_same_losses(tiny_config, tmp_path):
    first = TextTrainer.train_run(
        dataclasses.replace(tiny_config, max_steps=12, out=str(tmp_path / "a")), **QUIET
    )
    second = TextTrainer.train_run(
        dataclasses.replace(tiny_config, max_steps=12, out=str(tmp_path / "b")), **QUIET
    )
    assert len(first.step_losses) == 12
    np.testing.assert_allclose(first.step_losses, second.step_losses, rtol=1e-6)
    third = TextTrainer.train_run(
        dataclasses.replace(tiny_config, max_steps=12, seed=1, out=str(tmp_path / "c")), **QUIET
    )
    assert not np.allclose(first.step_losses, third.step_losses)


def test_training_lowers_the_loss(tiny_config):
    result = TextTrainer.train_run(dataclasses.replace(tiny_config, epochs=4), **QUIET)
    assert result.stopped_by == "epochs"
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["val"] < result.history[0]["val"] < np.log(30)
    assert np.mean(result.step_losses[-10:]) < np.mean(result.step_losses[:10]) - 0.5


# Mid-epoch (slow: test_run_integrity resumes mid-epoch quickly), and across an epoch boundary.
@pytest.mark.parametrize("split", [pytest.param(15, marks=pytest.mark.slow), 50])
def test_stop_and_resume_continues_the_same_trajectory(tiny_config, tmp_path, split):
    config = dataclasses.replace(tiny_config, dropout=0.1, max_steps=60)
    TextTrainer.train_run(dataclasses.replace(config, out=str(tmp_path / "straight")), **QUIET)
    resumed = str(tmp_path / "resumed")
    TextTrainer.train_run(dataclasses.replace(config, max_steps=split, out=resumed), **QUIET)
    result = TextTrainer.train_run(
        dataclasses.replace(config, out=resumed, resume=True), explicit={"max_steps"}, **QUIET
    )
    assert result.global_step == 60
    assert_same_checkpoint(str(tmp_path / "straight"), resumed)


@pytest.mark.integration
def test_sigkill_then_resume(tiny_config, tmp_path):
    """A run killed with SIGKILL resumes from its last checkpoint onto the same trajectory."""
    steps = 80
    config = dataclasses.replace(tiny_config, epochs=10, max_steps=steps, checkpoint_every=3)
    TextTrainer.train_run(dataclasses.replace(config, out=str(tmp_path / "straight")), **QUIET)

    run = str(tmp_path / "killed")
    flags = ["--data", config.data, "--out", run, *TINY_CONFIG_FLAGS]
    flags += ["--epochs", "10", "--checkpoint-every", "3", "--lr-schedule", "constant"]
    process = subprocess.Popen(
        python_module("textgen.train", *flags, "--max-steps", "100000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_checkpoint(run, 9, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = RunDirectory(run).load_checkpoint()[1]["global_step"]
    assert 9 <= killed_at < steps
    leftovers = [f for f in os.listdir(run) if f.endswith(".tmp")]
    # A kill during a write may leave a temporary file, never a broken checkpoint.
    assert all(f.startswith((".checkpoint.npz.", ".checkpoint.prev.npz.")) for f in leftovers)
    resumed = run_python_module("textgen.train", *flags, "--max-steps", steps, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"global step {killed_at})" in resumed.stdout
    assert_same_checkpoint(str(tmp_path / "straight"), run)


def test_divergence_aborts_and_keeps_the_last_good_checkpoint(tiny_config):
    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=10), **QUIET)
    path = RunDirectory(tiny_config.out).checkpoint_path
    before = open(path, "rb").read()
    exploding = dataclasses.replace(
        tiny_config, resume=True, max_steps=40, optimizer="sgd", learning_rate=1e6, grad_clip=0.0
    )
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        TextTrainer.train_run(
            exploding, explicit={"max_steps", "learning_rate", "grad_clip"}, **QUIET
        )
    assert open(path, "rb").read() == before
    assert RunDirectory(tiny_config.out).load_checkpoint()[1]["global_step"] == 10


def test_max_minutes_stops_cleanly_with_a_checkpoint(tiny_config):
    result = TextTrainer.train_run(
        dataclasses.replace(tiny_config, epochs=1000, max_minutes=0.05), **QUIET
    )
    assert result.stopped_by == "max_minutes"
    progress = RunDirectory(tiny_config.out).load_checkpoint()[1]
    assert progress["global_step"] == result.global_step > 0
    assert np.isfinite(result.final_val_loss)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad", "sgd"])
def test_optimizers_train(tiny_config, optimizer):
    rates = {"adam": 1e-2, "rmsprop": 1e-2, "adagrad": 1e-1, "sgd": 1.0}
    result = TextTrainer.train_run(
        dataclasses.replace(
            tiny_config, optimizer=optimizer, max_steps=30, learning_rate=rates[optimizer]
        ),
        **QUIET,
    )
    assert np.mean(result.step_losses[-5:]) < result.step_losses[0] - 0.3


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_train_and_sample(tiny_config, cell):
    result = TextTrainer.train_run(
        dataclasses.replace(tiny_config, cell=cell, max_steps=30), **QUIET
    )
    assert np.mean(result.step_losses[-5:]) < result.step_losses[0] - 0.3
    model = LanguageModel.from_run_directory(tiny_config.out)
    assert model.cell == cell
    assert len(model.sample("Spe", length=40, seed=3)[0]) == 40


def test_learning_rate_decay_schedule(tiny_config):
    result = TextTrainer.train_run(
        dataclasses.replace(
            tiny_config, epochs=3, lr_decay=0.5, lr_decay_after=1, learning_rate=4e-3
        ),
        **QUIET,
    )
    assert [h["learning_rate"] for h in result.history] == pytest.approx(
        [4e-3, 2e-3, 1e-3], rel=1e-5
    )


def test_run_directory_contents(tiny_config):
    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=3, export=True), **QUIET)
    assert os.path.isfile(os.path.join(tiny_config.out, "saved_model", "saved_model.pb"))
    run = RunDirectory(tiny_config.out)
    config = json.load(open(run.config_path))
    assert config["hidden_size"] == 32
    vocabulary = run.load_vocabulary()
    assert "\n" in vocabulary and len(vocabulary) < 40
    groups, progress = run.load_checkpoint()
    assert set(groups) == {"model", "optimizer", "states"}
    assert {"epoch", "step_in_epoch", "global_step", "rng"} <= set(progress)
    assert "step_losses" not in progress and "history" not in progress  # RUN/metrics.jsonl
    assert [s.shape for s in groups["states"]] == [(8, 32)] * 4


def test_batch_parts_train_the_same_function(tiny_config, tmp_path):
    """Groups of streams run as parallel branches (--batch-parts) compute the same loss and
    gradient as one batch: same losses, weights and carried states, up to float rounding."""
    config = dataclasses.replace(tiny_config, dropout=0.0, max_steps=30, batch_size=9)
    whole = TextTrainer.train_run(
        dataclasses.replace(config, batch_parts=1, out=str(tmp_path / "one")), **QUIET
    )
    split = TextTrainer.train_run(
        dataclasses.replace(config, batch_parts=3, out=str(tmp_path / "three")), **QUIET
    )
    np.testing.assert_allclose(split.step_losses, whole.step_losses, rtol=1e-4)
    for a, b in zip(split.states, whole.states):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert_same_checkpoint(str(tmp_path / "one"), str(tmp_path / "three"), rtol=1e-3, atol=1e-4)
    with open(tmp_path / "three" / "config.json", encoding="utf-8") as f:
        assert json.load(f)["batch_parts"] == 3  # saved, so --resume splits the same way
