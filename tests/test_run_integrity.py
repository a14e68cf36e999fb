"""Run directories that survive damage, contention, signals and full disks (textgen.train): the
checkpoint's checksum, the previous checkpoint, the run directory's lock, SIGINT/SIGTERM that
write a checkpoint, a full disk that keeps the last one, and --max-steps on resume."""

import dataclasses
import errno
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from helpers import (
    QUIET,
    TINY_CONFIG_FLAGS,
    assert_same_checkpoint,
    file_size_limit,
    one_error_line,
    python_module,
    rewrite_checkpoint,
    run_python_module,
    snapshot,
    wait_for_checkpoint,
)
from textgen import train as train_cli
from textgen.errors import DiskFull, UsageError
from textgen.io import is_disk_full
from textgen.training.run_directory import RunDirectory
from textgen.training.stop_request import StopRequest
from textgen.training.text_trainer import TextTrainer

TINY_FLAGS = TINY_CONFIG_FLAGS + ["--no-progress", "--lr-schedule", "constant"]


def one_line_error(capsys, argv, status=2):
    """The one error line of `textgen.train ARGV`, which must exit with `status`."""
    exit_status = train_cli.main(argv)
    return one_error_line(exit_status, capsys.readouterr().err.strip(), exit_status=status)


def test_a_changed_array_fails_the_checksum(tiny_config, capsys):
    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=4), **QUIET)
    run = RunDirectory(tiny_config.out)
    assert "checksum" in np.load(run.checkpoint_path).files

    def flip(arrays):
        weights = (
            arrays["model/language_model/recurrent_stack/lstm_0/lstm_cell/kernel"]
            .reshape(-1)
            .view(np.uint32)
        )
        weights[7] ^= 1 << 20  # one bit of one weight

    rewrite_checkpoint(run.checkpoint_path, flip)
    with pytest.raises(UsageError, match="fails its checksum"):
        run.load_checkpoint()
    err = one_line_error(capsys, ["--out", tiny_config.out, "--resume"])
    assert "checkpoint.npz fails its checksum" in err


def test_a_checkpoint_without_a_checksum_still_loads(tiny_config):
    """Checkpoints written before checksums existed (the bundled captioner's) load as before."""
    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=3), **QUIET)
    run = RunDirectory(tiny_config.out)
    expected, _ = run.load_checkpoint()
    rewrite_checkpoint(run.checkpoint_path, lambda arrays: arrays.pop("checksum"))
    groups, progress = run.load_checkpoint()
    assert progress["global_step"] == 3
    np.testing.assert_array_equal(groups["model"][0], expected["model"][0])


def test_the_previous_checkpoint_is_kept_and_resumed_from_only_when_asked(
    tiny_config, tmp_path, capsys
):
    config = dataclasses.replace(tiny_config, max_steps=30, checkpoint_every=4, dropout=0.1)
    TextTrainer.train_run(dataclasses.replace(config, out=str(tmp_path / "straight")), **QUIET)
    TextTrainer.train_run(
        dataclasses.replace(config, max_steps=10), **QUIET
    )  # checkpoints at 4, 8 and 10
    run = RunDirectory(config.out)
    assert run.load_checkpoint("previous")[1]["global_step"] == 8

    with open(run.checkpoint_path, "r+b") as f:  # a disk error: a stretch of bytes gone
        f.seek(200)
        f.write(b"\0" * 64)
    before = snapshot(config.out)
    err = one_line_error(capsys, ["--out", config.out, "--resume"])
    assert "checkpoint.npz" in err
    assert "previous checkpoint (global step 8) is intact" in err
    assert "--resume --resume-from previous" in err
    # Nothing fell back silently, and nothing was written.
    assert before == snapshot(config.out)

    resumed = TextTrainer.train_run(
        dataclasses.replace(config, resume=True, resume_from="previous"),
        explicit={"resume_from", "max_steps"},
        **QUIET,
    )
    assert resumed.global_step == 30
    assert_same_checkpoint(str(tmp_path / "straight"), config.out)
    # The damaged checkpoint never became the previous one.
    assert run.load_checkpoint("previous")[1]["global_step"] == 28


def test_a_run_that_ends_with_an_epoch_writes_its_last_checkpoint_once(tiny_config):
    """The previous checkpoint is the one before the latest: the epoch's end, not a second copy
    of the final step."""
    config = dataclasses.replace(tiny_config, epochs=2, checkpoint_every=10_000)
    result = TextTrainer.train_run(config, **QUIET)
    assert result.stopped_by == "epochs" and result.epoch == 2
    run = RunDirectory(config.out)
    latest = run.load_checkpoint()[1]
    previous = run.load_checkpoint("previous")[1]
    assert latest["global_step"] == result.global_step
    assert previous["global_step"] == result.global_step // 2  # the first epoch's end
    assert (previous["epoch"], previous["step_in_epoch"]) == (1, 0)


def test_resume_from_previous_needs_resume_and_a_previous_checkpoint(tiny_config, capsys):
    err = one_line_error(
        capsys,
        ["--data", tiny_config.data, "--out", tiny_config.out, "--resume-from", "previous"]
        + TINY_FLAGS,
    )
    assert "--resume-from previous needs --resume" in err
    TextTrainer.train_run(
        dataclasses.replace(tiny_config, max_steps=2, checkpoint_every=100), **QUIET
    )
    assert not os.path.exists(RunDirectory(tiny_config.out).previous_checkpoint_path())
    err = one_line_error(
        capsys, ["--out", tiny_config.out, "--resume", "--resume-from", "previous"]
    )
    assert "has no previous checkpoint" in err


def test_resuming_a_run_already_at_max_steps_does_nothing(tiny_config, capsys):
    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=5), **QUIET)
    run = RunDirectory(tiny_config.out)
    before = open(run.checkpoint_path, "rb").read()
    lines = []
    result = TextTrainer.train_run(
        dataclasses.replace(tiny_config, max_steps=5, resume=True),
        log=lines.append,
        progress_bar=False,
    )
    assert result.global_step == 5 and result.stopped_by == "done"
    assert any("already at global step 5 (--max-steps 5): nothing to do" in line for line in lines)
    assert open(run.checkpoint_path, "rb").read() == before
    # A larger --max-steps trains on.
    assert (
        TextTrainer.train_run(
            dataclasses.replace(tiny_config, max_steps=7, resume=True),
            explicit={"max_steps"},
            **QUIET,
        ).global_step
        == 7
    )


def test_stop_request_first_signal_asks_the_second_quits():
    # What SIGINT did before: Python's KeyboardInterrupt, or SIG_IGN in a process started in
    # the background (a shell's `&` and nohup ignore it, as CI's launcher may).
    before = signal.getsignal(signal.SIGINT)
    messages = []
    with StopRequest(messages.append) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_number == signal.SIGTERM
        assert "stopping after this step" in messages[0]
        with pytest.raises(SystemExit) as exit_info:
            os.kill(os.getpid(), signal.SIGTERM)
        assert exit_info.value.code == 143
    with StopRequest(messages.append) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_number == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def start_training(config, run, extra=()):
    command = python_module(
        "textgen.train",
        *["--data", config.data, "--out", run, "--epochs", "1000", "--checkpoint-every", "1000"],
        *TINY_FLAGS,
        *extra,
    )
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.integration
@pytest.mark.parametrize(  # SIGTERM slow: the captioner's SIGKILL and this SIGINT stay quick
    "signal_number", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_a_signal_writes_a_checkpoint_and_the_run_resumes_exactly(
    tiny_config, tmp_path, capsys, signal_number
):
    """A second writer is refused while the first runs; SIGINT/SIGTERM make the first finish its
    step, write a checkpoint of it, say so and exit 130/143; --resume goes on bit for bit."""
    run = str(tmp_path / "signalled")
    # The epoch ends every 42 steps, so a checkpoint on disk is at most 42 steps old.
    process = start_training(tiny_config, run)
    try:
        wait_for_checkpoint(run, 1, process)
        err = one_line_error(capsys, ["--out", run, "--resume"])
        assert "is being written by a training process that is still running" in err
        assert f"pid {process.pid}" in err
        time.sleep(1.0)  # a few steps past the epoch-end checkpoint
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal_number, stderr
    line = stderr.strip().splitlines()[-1]
    stopped_at = RunDirectory(run).load_checkpoint()[1]["global_step"]
    assert line == f"interrupted at step {stopped_at}; checkpoint written; continue with --resume"
    assert "Traceback" not in stderr

    total = stopped_at + 5
    straight = dataclasses.replace(
        tiny_config,
        epochs=1000,
        checkpoint_every=1000,
        max_steps=total,
        out=str(tmp_path / "straight"),
    )
    TextTrainer.train_run(straight, **QUIET)
    assert (
        train_cli.main(["--out", run, "--resume", "--max-steps", str(total), "--no-progress"]) == 0
    )
    assert_same_checkpoint(straight.out, run)


@pytest.mark.integration
def test_a_full_disk_keeps_the_last_checkpoint_and_exits_3(tiny_config):
    """A file-size limit makes every write past it fail, as a full disk does (EFBIG for
    ENOSPC); SIGXFSZ is ignored so that the write fails instead of killing the process."""
    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=4), **QUIET)
    run = RunDirectory(tiny_config.out)
    before = open(run.checkpoint_path, "rb").read()
    result = run_python_module(
        "textgen.train",
        *["--out", tiny_config.out, "--resume", "--max-steps", "8", "--no-progress"],
        timeout=120,
        preexec_fn=file_size_limit(20_000),
    )
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: no space left to write {run.checkpoint_path}: it needs about ")
    assert "kB" in line and "is intact" in line and "--resume" in line
    assert "Traceback" not in result.stderr
    assert open(run.checkpoint_path, "rb").read() == before
    assert not [f for f in os.listdir(tiny_config.out) if f.endswith(".tmp")]


def test_a_full_disk_during_the_export_is_one_line(tiny_config, monkeypatch):
    from textgen.generation import saved_model

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(saved_model, "export_saved_model", no_space)
    with pytest.raises(DiskFull, match="python -m textgen.export") as error:
        TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=3, export=True), **QUIET)
    assert "the checkpoint and any earlier export are intact" in str(error.value)
    assert RunDirectory(tiny_config.out).load_checkpoint()[1]["global_step"] == 3


def test_tensorflow_write_errors_count_as_a_full_disk():
    import tensorflow as tf

    assert is_disk_full(OSError(errno.ENOSPC, "x"))
    assert is_disk_full(
        tf.errors.ResourceExhaustedError(None, None, "write: No space left on device")
    )
    assert is_disk_full(tf.errors.UnknownError(None, None, "File too large"))
    assert not is_disk_full(OSError(errno.EACCES, "x"))


def test_variables_are_stored_and_matched_by_name(tiny_config):
    """Keys are variable paths without the per-process numbering of Keras' names, so a
    checkpoint loads into a model built in another process (or later in this one), and a
    variable that is missing or renamed is an error instead of a silently shifted assignment."""
    from textgen.network.language_model import LanguageModel
    from textgen.training.run_directory import read_checkpoint

    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=2), **QUIET)
    run = RunDirectory(tiny_config.out)
    names = np.load(run.checkpoint_path).files
    assert "model/language_model/recurrent_stack/lstm_1/lstm_cell/kernel" in names
    assert "model/seed_generator/seed_generator_state#0" in names
    assert "optimizer/adam/iteration" in names
    assert "optimizer/adam/language_model_recurrent_stack_lstm_0_lstm_cell_kernel_momentum" in names
    # The latest checkpoint, the one this test reads and rewrites (not checkpoint.best.npz).
    LanguageModel.from_run_directory(tiny_config.out, "latest")  # a second model: numbered _1
    model = LanguageModel.from_run_directory(tiny_config.out, "latest")
    groups, _ = read_checkpoint(run.checkpoint_path, None)
    model_group = groups["model"]
    kernel = model_group[
        model_group.names.index("language_model/recurrent_stack/lstm_1/lstm_cell/kernel")
    ]
    [variable] = [
        v for v in model.variables if v.path.endswith("/recurrent_stack/lstm_1/lstm_cell/kernel")
    ]
    assert not variable.path.startswith(
        "language_model/"
    )  # numbered: a later model of this process
    np.testing.assert_array_equal(variable.numpy(), kernel)

    def rename(arrays):
        arrays["model/language_model/recurrent_stack/lstm_9/lstm_cell/kernel"] = arrays.pop(
            "model/language_model/recurrent_stack/lstm_1/lstm_cell/kernel"
        )
        arrays.pop("checksum")

    rewrite_checkpoint(run.checkpoint_path, rename)
    with pytest.raises(
        UsageError, match="lacks 'language_model/recurrent_stack/lstm_1/lstm_cell/kernel'"
    ):
        LanguageModel.from_run_directory(tiny_config.out, "latest")
