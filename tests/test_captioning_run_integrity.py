"""captioning.train's run directory: exact resume from every stop point (the step before an
epoch's short last batch, an epoch end, a SIGKILL), SIGTERM that writes a checkpoint, the lock,
a full disk and --max-steps on resume. The checkpoint format itself is textgen's RunDirectory
(tests/test_run_integrity.py)."""

import errno
import os
import signal
import subprocess

import pytest

from captioning.train import main
from captioning.training.caption_trainer import CaptionTrainer
from helpers import (
    Log,
    assert_same_arrays,
    python_module,
    tiny_caption_config,
    tiny_caption_flags,
    wait_for_checkpoint,
)
from textgen.errors import DiskFull
from textgen.training.run_directory import RunDirectory

# 12 images in batches of 5: 3 steps an epoch (5, 5 and a short 2), 9 steps in all.
COMMON = dict(
    dropout=0.25, epochs=3, eval_images=0, lr_schedule="constant", batch_size=5, checkpoint_every=1
)


@pytest.fixture(scope="module")
def straight(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    return out, CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, out, max_steps=9, **COMMON), log=Log(), progress_bar=False
    )


# 2 and 5: before a short batch; 3: epoch end. 5 and 7 are slow: 2 and 3 keep both cases quick.
@pytest.mark.parametrize(
    "stop", [2, 3, pytest.param(5, marks=pytest.mark.slow), pytest.param(7, marks=pytest.mark.slow)]
)
def test_every_stop_point_resumes_bit_for_bit(shapes_data, tmp_path, straight, stop):
    straight_out, straight_result = straight
    out = tmp_path / "split"
    first = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, out, max_steps=stop, **COMMON),
        log=Log(),
        progress_bar=False,
    )
    assert first.global_step == stop
    resumed = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, out, max_steps=9, resume=True, **COMMON),
        explicit=["max_steps", "resume"],
        log=Log(),
        progress_bar=False,
    )
    assert resumed.global_step == 9
    assert resumed.step_losses == straight_result.step_losses
    assert [h["train"] for h in resumed.history] == [h["train"] for h in straight_result.history]
    assert_same_arrays(straight_out, out)


def cli_command(data, out, *extra):
    flags = tiny_caption_flags(data, out)
    flags[flags.index("--batch-size") + 1] = "5"
    flags[flags.index("--epochs") + 1] = "10000"
    return python_module(
        "captioning.train",
        *flags,
        *["--checkpoint-every", "1", "--lr-schedule", "constant", "--dropout", "0.25"],
        *extra,
    )


@pytest.mark.integration
@pytest.mark.parametrize(  # SIGTERM slow: test_run_integrity resumes after one quickly
    "signal_number", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_a_killed_or_terminated_run_resumes_bit_for_bit(
    shapes_data, tmp_path, capsys, signal_number
):
    out = tmp_path / "run"
    process = subprocess.Popen(
        cli_command(shapes_data, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_checkpoint(out, 4, process)
        # A second writer is refused while the first one runs.
        assert main(["--out", str(out), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "is being written by a training process that is still running" in err, err
        assert len(err.splitlines()) == 1
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stopped_at = RunDirectory(out).load_checkpoint()[1]["global_step"]
    if signal_number == signal.SIGTERM:
        assert process.returncode == 143, stderr
        assert stderr.strip().splitlines()[-1] == (
            f"interrupted at step {stopped_at}; checkpoint written; continue with --resume"
        )
    else:
        assert process.returncode == -signal.SIGKILL
    total = stopped_at + 4
    resumed = subprocess.run(
        cli_command(shapes_data, out, "--resume", "--max-steps", str(total)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"(global step {stopped_at})" in resumed.stdout
    straight = tmp_path / "straight"
    assert (
        main([str(a) for a in cli_command(shapes_data, straight, "--max-steps", str(total))[3:]])
        == 0
    )
    assert_same_arrays(straight, out)


def test_resuming_a_run_already_at_max_steps_does_nothing(shapes_data, tmp_path):
    out = tmp_path / "run"
    CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, out, max_steps=4, **COMMON), log=Log(), progress_bar=False
    )
    before = open(RunDirectory(out).checkpoint_path, "rb").read()
    log = Log()
    result = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, out, max_steps=4, resume=True, **COMMON),
        explicit=["resume"],
        log=log,
        progress_bar=False,
    )
    assert result.global_step == 4 and result.stopped_by == "done"
    assert "already at global step 4 (--max-steps 4): nothing to do" in log.text
    assert open(RunDirectory(out).checkpoint_path, "rb").read() == before


def test_a_full_disk_keeps_the_last_checkpoint(shapes_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, out, max_steps=2, **COMMON), log=Log(), progress_bar=False
    )
    before = open(RunDirectory(out).checkpoint_path, "rb").read()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # where a delayed allocation failure surfaces
    with pytest.raises(DiskFull, match="checkpoint.npz: it needs about .* is intact"):
        CaptionTrainer.train_run(
            tiny_caption_config(shapes_data, out, max_steps=4, resume=True, **COMMON),
            explicit=["max_steps", "resume"],
            log=Log(),
            progress_bar=False,
        )
    assert open(RunDirectory(out).checkpoint_path, "rb").read() == before
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
