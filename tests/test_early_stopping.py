"""--patience stops a run after N evaluations without a better validation loss; the best
evaluation's weights are kept in checkpoint.best.npz, which sample, score and export use unless
--weights latest says otherwise, and a resumed run knows the best so far."""

import dataclasses
import os

import numpy as np
import pytest

from helpers import QUIET
from textgen import export as export_cli
from textgen import sample as sample_cli
from textgen.errors import UsageError
from textgen.network.language_model import LanguageModel
from textgen.training import metrics_log
from textgen.training.run_directory import RunDirectory
from textgen.training.text_trainer import TextTrainer


def scripted_validation(monkeypatch, best_at=6):
    """Validation losses that fall to `best_at` steps and rise after it, whatever the weights:
    1.0 + |step - best_at| / 10."""

    def evaluate(trainer):
        return 1.0 + abs(trainer.progress.global_step - best_at) / 10

    monkeypatch.setattr(TextTrainer, "evaluate", evaluate)


@pytest.fixture
def config(tiny_config):
    # An epoch is 39 steps: every evaluation below is an --eval-every one.
    return dataclasses.replace(tiny_config, eval_every=2, patience=2, checkpoint_every=3)


def arrays(path, group="model/"):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k].copy() for k in data.files if k.startswith(group)}


def test_patience_stops_the_run_and_keeps_the_best_weights(config, monkeypatch, tmp_path):
    scripted_validation(monkeypatch)
    lines = []
    result = TextTrainer.train_run(config, log=lines.append, progress_bar=False)
    # Evaluations at 2, 4, 6 (the best), 8 and 10: two without a better one.
    assert result.stopped_by == "patience" and result.global_step == 10
    assert any("stopped by patience at global step 10" in line for line in lines)
    assert any("at step 6, whose weights are in checkpoint.best.npz" in line for line in lines)
    rows = metrics_log.evaluations(metrics_log.read_rows(os.path.join(config.out, "metrics.jsonl")))
    assert [row["step"] for row in rows if row.get("best")] == [2, 4, 6]

    run = RunDirectory(config.out)
    _, best = run.load_checkpoint("best")
    assert (best["best_step"], best["global_step"]) == (6, 6)
    # The best weights are the weights of the step they name: a run of 6 steps has them.
    six = dataclasses.replace(config, patience=0, max_steps=6, out=str(tmp_path / "six"))
    TextTrainer.train_run(six, **QUIET)
    expected = arrays(RunDirectory(six.out).checkpoint_path)
    kept = arrays(run.best_checkpoint_path())
    assert expected.keys() == kept.keys()
    for key in expected:
        np.testing.assert_array_equal(kept[key], expected[key])
    assert not np.array_equal(
        arrays(run.checkpoint_path)["model/language_model/embedding/embeddings"],
        kept["model/language_model/embedding/embeddings"],
    )


def test_a_resumed_run_knows_the_best_so_far(config, monkeypatch, tmp_path):
    scripted_validation(monkeypatch)
    straight = TextTrainer.train_run(dataclasses.replace(config, out=str(tmp_path / "s")), **QUIET)
    TextTrainer.train_run(dataclasses.replace(config, max_steps=7), **QUIET)  # best at 6 seen
    resumed = TextTrainer.train_run(
        dataclasses.replace(config, resume=True, max_steps=0),
        explicit={"resume", "max_steps"},
        **QUIET,
    )
    assert (resumed.stopped_by, resumed.global_step) == (straight.stopped_by, 10)
    np.testing.assert_array_equal(resumed.step_losses, straight.step_losses)
    _, best = RunDirectory(config.out).load_checkpoint("best")
    assert best["best_step"] == 6
    # Nothing is left to do once the patience is spent.
    lines = []
    again = TextTrainer.train_run(
        dataclasses.replace(config, resume=True, max_steps=0),
        explicit={"resume", "max_steps"},
        log=lines.append,
        progress_bar=False,
    )
    assert again.stopped_by == "done" and any("stopped early" in line for line in lines)


def test_sample_and_export_use_the_best_weights_unless_told_latest(config, monkeypatch, capsys):
    scripted_validation(monkeypatch)
    TextTrainer.train_run(config, **QUIET)
    run = RunDirectory(config.out)
    best = LanguageModel.from_run_directory(config.out)
    latest = LanguageModel.from_run_directory(config.out, weights="latest")
    kept = arrays(run.best_checkpoint_path())["model/language_model/embedding/embeddings"]
    np.testing.assert_array_equal(best.embedding.embeddings.numpy(), kept)
    assert not np.array_equal(
        best.embedding.embeddings.numpy(), latest.embedding.embeddings.numpy()
    )
    with pytest.raises(UsageError, match="`weights` must be best or latest"):
        LanguageModel.from_run_directory(config.out, weights="newest")

    argv = [config.out, "--length", "40", "--temperature", "0"]
    assert sample_cli.main(argv) == 0
    from_best = capsys.readouterr().out
    assert sample_cli.main([*argv, "--weights", "latest"]) == 0
    from_latest = capsys.readouterr().out
    assert from_best == best.sample(length=40, temperature=0)[0] + "\n"
    assert from_latest == latest.sample(length=40, temperature=0)[0] + "\n"


@pytest.mark.slow  # test_damaged_run_directory damages checkpoint.best.npz for each CLI quickly
def test_a_damaged_best_checkpoint_is_one_line_that_names_the_way_out(config, monkeypatch, capsys):
    scripted_validation(monkeypatch)
    TextTrainer.train_run(config, **QUIET)
    path = RunDirectory(config.out).best_checkpoint_path()
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 64)
    assert export_cli.main([config.out, config.out + "-export"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "checkpoint.best.npz" in err and "pass --weights latest" in err
    assert export_cli.main([config.out, config.out + "-export", "--weights", "latest"]) == 0


def test_without_patience_the_run_goes_on_and_still_keeps_the_best(config, monkeypatch):
    scripted_validation(monkeypatch)
    result = TextTrainer.train_run(dataclasses.replace(config, patience=0, max_steps=14), **QUIET)
    assert result.stopped_by == "max_steps" and result.global_step == 14
    _, best = RunDirectory(config.out).load_checkpoint("best")
    assert best["best_step"] == 6
