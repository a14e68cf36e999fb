"""RUN/metrics.jsonl: the loss history lives in an append-only log, not in the checkpoint; a
resume cuts the log back to the checkpoint's step, so the log is the trajectory, each step once."""

import dataclasses
import json
import os

import numpy as np

from helpers import QUIET, rewrite_checkpoint
from textgen.training.metrics_log import (
    FILE,
    MetricsLog,
    evaluations,
    history,
    read_rows,
    step_losses,
)
from textgen.training.run_directory import CHECKSUM, RunDirectory, checksum
from textgen.training.text_trainer import TextTrainer


def write_rows(path, steps, torn=True):
    with open(path, "a", encoding="utf-8") as f:
        for step in steps:
            f.write(json.dumps({"kind": "step", "step": step, "loss": 99.0}) + "\n")
        if torn:
            f.write('{"kind": "step", "step": 99, "lo')  # a process killed mid-line


def test_resume_truncates_at_the_checkpoint_step_and_at_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path).open()
    for step in range(1, 7):
        log.step(step, 0, 1.0 / step, 0.01)
    log.evaluation("epoch", 6, 1, 0.5, train=0.6)
    log.close()
    write_rows(log.path, [7, 8])
    resumed = MetricsLog(tmp_path).open(resume_step=7)
    assert len(resumed.losses) == 7 and resumed.losses[-1] == 99.0
    assert [row["val"] for row in resumed.history] == [0.5]
    resumed.step(8, 0, 0.125, 0.01)
    resumed.close()
    rows = read_rows(log.path)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6, 6, 7, 8]
    assert step_losses(rows)[-1] == 0.125 and [r["reason"] for r in evaluations(rows)] == ["epoch"]
    # A worker other than the chief reads what is there and writes nothing.
    before = open(log.path, "rb").read()
    other = MetricsLog(tmp_path, write=False).open(resume_step=3)
    other.step(4, 0, 1.0, 0.01)
    other.flush()
    other.close()
    assert other.losses == [1.0, 0.5, 1.0 / 3, 1.0] and open(log.path, "rb").read() == before


def test_the_log_holds_every_step_and_evaluation_and_the_checkpoint_does_not_grow(
    tiny_config, tmp_path
):
    config = dataclasses.replace(tiny_config, max_steps=3, out=str(tmp_path / "run"))
    TextTrainer.train_run(config, **QUIET)
    checkpoint = RunDirectory(config.out).checkpoint_path
    early = os.path.getsize(checkpoint)
    resumed = dataclasses.replace(config, max_steps=60, resume=True)
    result = TextTrainer.train_run(resumed, explicit={"max_steps", "resume"}, **QUIET)
    # 57 more losses as JSON would add over 1 kB; the numbers in the progress record
    # (steps, epoch sums) may take a few more digits.
    assert abs(os.path.getsize(checkpoint) - early) < 100
    _, progress = RunDirectory(config.out).load_checkpoint()
    assert "step_losses" not in progress and "history" not in progress

    rows = read_rows(os.path.join(config.out, FILE))
    steps = [row for row in rows if row["kind"] == "step"]
    assert [row["step"] for row in steps] == list(range(1, 61))
    assert step_losses(rows) == result.step_losses
    assert all(row["learning_rate"] == config.learning_rate for row in steps)
    # The first run's final weights, an epoch's end (about 40 steps), the second run's end.
    (first, (epoch, epoch_end), last) = ((r["reason"], r["step"]) for r in evaluations(rows))
    assert first == ("final", 3) and epoch == "epoch" and 30 < epoch_end < 60
    assert last == ("final", 60) and evaluations(rows)[-1]["val"] == result.final_val_loss
    assert history(rows) == result.history and result.history[0]["epoch"] == 1
    assert result.history[0]["val_bits_per_char"] > 0


def test_a_run_from_before_the_log_resumes_with_its_history(tiny_config, tmp_path):
    """A checkpoint that still holds step_losses and history (written before the log) starts
    the log with them."""
    config = dataclasses.replace(tiny_config, max_steps=6, out=str(tmp_path / "run"))
    TextTrainer.train_run(config, **QUIET)
    run = RunDirectory(config.out)

    def add_the_old_records(arrays):
        progress = json.loads(arrays["progress"].tobytes())
        progress["step_losses"] = [float(i) for i in range(1, 7)]
        progress["history"] = [{"epoch": 1, "global_step": 6, "train": 1.5, "val": 1.25}]
        arrays["progress"] = np.frombuffer(json.dumps(progress).encode(), np.uint8)
        arrays[CHECKSUM] = np.frombuffer(checksum(arrays).encode("ascii"), np.uint8)

    rewrite_checkpoint(run.checkpoint_path, add_the_old_records)
    os.remove(os.path.join(config.out, FILE))
    result = TextTrainer.train_run(
        dataclasses.replace(config, max_steps=8, resume=True),
        explicit={"max_steps", "resume"},
        **QUIET,
    )
    assert result.step_losses[:6] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and len(result.step_losses) == 8
    assert [h["val"] for h in result.history] == [1.25]
    _, progress = run.load_checkpoint()
    assert "step_losses" not in progress
