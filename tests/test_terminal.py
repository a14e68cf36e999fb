"""The command-line programs in a real terminal: each test starts `python -m ...` on the slave
side of a pseudo-terminal whose window is 40 x 120, reads everything it writes until it exits,
and parses tqdm's bar frames out of it.

The size matters: in a 0 x 0 pty tqdm draws nothing, and a crash inside the bar's code hides
(issue 25, defect 3.1: the captioner's `_bar(total, description)` overrode the loop's
`_bar(epoch, first_step)`, so `captioning.train --resume` died with tqdm's "TypeError: 'int'
object is not subscriptable" and a fresh run's bar had the epoch index as its total). Every
other test trains with progress_bar=False or without a terminal.

Checked for both trainers, run fresh with --max-steps and then resumed with --resume and a
larger --max-steps, both stops mid-epoch: the exit status, no traceback, an epoch bar drawn with
a rate in the trainer's unit, every frame's total equal to the epoch's size, and the resumed run's
first frame at the units already done in the resumed epoch. Then `textgen.sample --stream` from
the trained run and from the bundled model.

The children get TEXTGEN_KERNEL=native and TEXTGEN_GENERATION=xla, as tests/conftest.py sets for
the in-process tests, so that no kernel or generation loop is measured. About 40 s in all.
"""

import errno
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from dataclasses import dataclass

import pytest

from helpers import ROOT, SMALL_TEXT, TRAIN_IMAGES, VAL_IMAGES, caption_data_flags, python_module

pytestmark = pytest.mark.integration

ROWS, COLUMNS = 40, 120
TIMEOUT = 240  # seconds per command; a tiny run takes 5-10 s

# textgen: the tiny layout of tests/conftest.py's tiny_config.
TEXT_BATCH, TEXT_SEQ = 8, 20
TEXT_FLAGS = [
    "--hidden-size=32",
    "--embedding-size=16",
    "--num-layers=2",
    f"--batch-size={TEXT_BATCH}",
    f"--seq-length={TEXT_SEQ}",
    "--epochs=3",
    "--sample-every=0",
    "--checkpoint-every=5",
    "--lr-schedule=constant",
    "--no-export",
]
# The fresh run stops 3 steps into epoch 2 (an epoch of SMALL_TEXT is 39 steps), the resumed
# one 3 steps later, so the resumed bar's start (the steps done in the epoch) differs from the
# global step.
TEXT_FRESH_STEPS, TEXT_RESUMED_STEPS = 42, 45

# captioning: defect 3.1's scenario on conftest's shapes_data (12 images to train on, 4 to
# validate), 3 batches of 4 per epoch. The fresh run stops at epoch 7, step 2 (8 of its 12 images
# done), the resumed one at epoch 12, step 2.
CAPTION_BATCH = 4
CAPTION_FRESH_STEPS, CAPTION_RESUMED_STEPS = 20, 35
CAPTION_FLAGS = [
    "--encoder-filters=4,8",
    "--feature-size=16",
    "--hidden-size=16",
    "--embedding-size=8",
    f"--batch-size={CAPTION_BATCH}",
    "--captions-per-image=2",
    "--epochs=12",
    "--eval-images=4",
    "--checkpoint-every=2",
    "--no-export",
]


# ---- running a command in a pseudo-terminal ----
@dataclass
class Terminal:
    """What one command wrote to its terminal, and how it ended."""

    command: list
    returncode: int
    text: str

    def __str__(self):
        return f"$ {' '.join(self.command)}  (exit {self.returncode})\n{self.text}"


def child_environment():
    env = dict(os.environ)
    env.update(
        TEXTGEN_KERNEL="native",
        TEXTGEN_GENERATION="xla",
        TF_CPP_MIN_LOG_LEVEL="2",
        TERM="xterm",
        PYTHONPATH=os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p),
    )
    # tqdm falls back to these when the terminal has no size; the window size is the one to use.
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    return env


def run_in_terminal(*args, timeout=TIMEOUT):
    """Runs `python -m ARGS` from the checkout with a 40 x 120 pseudo-terminal as its standard
    input, output and error; returns a Terminal once it exits. Killed, and the test failed,
    after `timeout` seconds."""
    command = python_module(*args)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    try:
        process = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=child_environment(),
            start_new_session=True,  # its own process group, killed as one on a timeout
        )
    finally:
        os.close(slave)  # the child holds the only slave descriptors: EIO once it has exited
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                text = b"".join(chunks).decode("utf-8", "replace")
                pytest.fail(f"no exit within {timeout} s: {' '.join(command)}\n{text}")
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if not ready:
                if process.poll() is not None:
                    break  # exited, and a descendant keeps the terminal open
                continue
            try:
                data = os.read(master, 65536)
            except OSError as error:
                if error.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    return Terminal(["python", *command[1:]], returncode, text)


def assert_clean_exit(result):
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.text, str(result)


# ---- tqdm's frames ----
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
NUMBER = r"[\d.]+[kMGTP]?"
FRAME = re.compile(
    rf"(?:(?P<desc>[^|]*?): *)?(?P<percent>\d+)%\|[^|]*\| *(?P<n>{NUMBER})/(?P<total>{NUMBER})"
    rf" \[[^\]]*?, (?:(?:\?|{NUMBER})(?P<unit>[A-Za-z]+)/s|{NUMBER}s/(?P<inverse>[A-Za-z]+))"
)


@dataclass
class Frame:
    desc: str
    n: float
    total: float
    unit: str
    line: str


def number(text):
    """tqdm's unit_scale figures: '0.00', '800', '6.24k' -> 0.0, 800.0, 6240.0."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
    if text[-1] in scale:
        return float(text[:-1]) * scale[text[-1]]
    return float(text)


def frames(text):
    """Every tqdm frame drawn, in order: tqdm redraws a line after a carriage return."""
    found = []
    for line in re.split(r"[\r\n]+", ANSI.sub("", text)):
        match = FRAME.search(line)
        if match:
            found.append(
                Frame(
                    (match["desc"] or "").strip(),
                    number(match["n"]),
                    number(match["total"]),
                    match["unit"] or match["inverse"],
                    line.strip(),
                )
            )
    return found


def about(value, expected):
    """Equal to tqdm's three significant figures."""
    return abs(value - expected) <= 0.005 * max(abs(expected), 1.0)


def epoch_frames(result, unit, total):
    """The epoch bars' frames, each checked: the unit, the total. Fails when none was drawn."""
    drawn = frames(result.text)
    epochs = [f for f in drawn if re.fullmatch(r"epoch \d+/\d+", f.desc)]
    seen = "\n".join(f.line for f in drawn) or "(no tqdm frame)"
    assert epochs, f"no epoch bar drawn; the frames:\n{seen}\n\n{result}"
    for frame in epochs:
        assert frame.unit == unit, f"{frame.line!r}: the rate is not in {unit}/s\n\n{result}"
        assert about(frame.total, total), (
            f"{frame.line!r}: the bar's total is {frame.total:g}, the epoch has {total}\n\n{result}"
        )
        assert 0 <= frame.n <= frame.total, frame.line
    return epochs


def first_frame_of(epochs, epoch):
    """The first frame drawn of `epoch` (1-based)."""
    for frame in epochs:
        if frame.desc.startswith(f"epoch {epoch}/"):
            return frame
    raise AssertionError(f"no bar of epoch {epoch}: {[f.line for f in epochs]}")


# ---- textgen ----
@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    """A textgen run trained fresh in a terminal, then resumed: (fresh, resumed, run directory,
    the epoch's batches from the run's first log line)."""
    base = tmp_path_factory.mktemp("terminal_text")
    corpus, out = base / "corpus.txt", base / "run"
    corpus.write_text(SMALL_TEXT, encoding="utf-8")
    flags = ["textgen.train", f"--data={corpus}", f"--out={out}", *TEXT_FLAGS]
    fresh = run_in_terminal(*flags, f"--max-steps={TEXT_FRESH_STEPS}")
    resumed = run_in_terminal(*flags, "--resume", f"--max-steps={TEXT_RESUMED_STEPS}")
    layout = re.search(r"(\d+) batches of (\d+) x (\d+) per epoch", fresh.text)
    assert layout, str(fresh)
    assert (int(layout[2]), int(layout[3])) == (TEXT_BATCH, TEXT_SEQ), layout[0]
    return fresh, resumed, out, int(layout[1])


def test_textgen_train_draws_its_epoch_bar_in_a_terminal(text_runs):
    fresh, _, out, steps = text_runs
    assert_clean_exit(fresh)
    assert f"stopped by max_steps at global step {TEXT_FRESH_STEPS}" in fresh.text, str(fresh)
    assert steps < TEXT_FRESH_STEPS < 2 * steps, f"{steps} steps per epoch: change the steps"
    units = TEXT_BATCH * TEXT_SEQ
    epochs = epoch_frames(fresh, "char", steps * units)
    assert {f.desc for f in epochs} == {"epoch 1/3", "epoch 2/3"}, [f.line for f in epochs]
    assert first_frame_of(epochs, 1).n == 0 and first_frame_of(epochs, 2).n == 0
    assert (out / "checkpoint.npz").exists()


def test_textgen_train_resumed_mid_epoch_starts_its_bar_part_way(text_runs):
    _, resumed, _, steps = text_runs
    assert_clean_exit(resumed)
    done = TEXT_FRESH_STEPS - steps  # steps of epoch 2 done before the resume
    assert f"at epoch 2, step {done}" in resumed.text, str(resumed)
    assert f"stopped by max_steps at global step {TEXT_RESUMED_STEPS}" in resumed.text
    units = TEXT_BATCH * TEXT_SEQ
    epochs = epoch_frames(resumed, "char", steps * units)
    first = epochs[0]
    assert first.desc == "epoch 2/3", first.line
    assert about(first.n, done * units), (
        f"the resumed bar starts at {first.n:g}, not at the {done * units} characters done: "
        f"{first.line!r}"
    )


def test_textgen_sample_streams_in_a_terminal(text_runs):
    _, _, out, _ = text_runs
    result = run_in_terminal("textgen.sample", out, "--stream", "--length=200", "--seed=1")
    assert_clean_exit(result)
    # 200 characters of the corpus' alphabet, some of them newlines (counted, rather than
    # required to be all of the output: a GPU build of TensorFlow may print lines of its own).
    alphabet = set(SMALL_TEXT) - set(" \n")
    assert sum(c in alphabet for c in result.text) >= 120, str(result)


def test_textgen_sample_streams_the_bundled_model_in_a_terminal():
    result = run_in_terminal("textgen.sample", "--stream", "--length=200", "--seed=1")
    assert_clean_exit(result)
    words = re.findall(r"[A-Za-z']+", result.text)
    assert len(words) >= 20, str(result)


# ---- captioning ----
@pytest.fixture(scope="module")
def caption_runs(shapes_data, tmp_path_factory):
    """A captioning run trained fresh in a terminal with --max-steps 20, then resumed with
    --max-steps 35: (fresh, resumed)."""
    out = tmp_path_factory.mktemp("terminal_captions") / "run"
    data = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in caption_data_flags(shapes_data).items()
    ]
    flags = ["captioning.train", *data, f"--out={out}", *CAPTION_FLAGS]
    fresh = run_in_terminal(*flags, f"--max-steps={CAPTION_FRESH_STEPS}")
    resumed = run_in_terminal(*flags, "--resume", f"--max-steps={CAPTION_RESUMED_STEPS}")
    return fresh, resumed, out


def check_decoding_bars(result):
    """The captioner's own bars, over the images it decodes, count those images."""
    for frame in frames(result.text):
        if frame.desc.startswith("decoding training"):
            assert frame.total == TRAIN_IMAGES and frame.unit == "img", frame.line
        elif frame.desc.startswith("decoding validation"):
            assert frame.total == VAL_IMAGES and frame.unit == "img", frame.line


def test_captioning_train_draws_its_epoch_bar_in_a_terminal(caption_runs):
    fresh, _, out = caption_runs
    assert_clean_exit(fresh)
    assert f"stopped by max_steps at global step {CAPTION_FRESH_STEPS}" in fresh.text, str(fresh)
    steps = -(-TRAIN_IMAGES // CAPTION_BATCH)
    assert f"{steps} batches of {CAPTION_BATCH} images" in fresh.text
    # The total is the images of an epoch, in every epoch (the defect drew the epoch index).
    epochs = epoch_frames(fresh, "img", TRAIN_IMAGES)
    reached = CAPTION_FRESH_STEPS // steps + 1
    assert {f.desc for f in epochs} == {f"epoch {e}/12" for e in range(1, reached + 1)}
    assert all(first_frame_of(epochs, e).n == 0 for e in range(1, reached + 1))
    check_decoding_bars(fresh)
    assert json.loads((out / "config.json").read_text())["batch_size"] == CAPTION_BATCH


def test_captioning_train_resumed_mid_epoch_starts_its_bar_part_way(caption_runs):
    """Defect 3.1's scenario: --max-steps 20, then --resume --max-steps 35."""
    _, resumed, _ = caption_runs
    assert_clean_exit(resumed)
    steps = -(-TRAIN_IMAGES // CAPTION_BATCH)
    epoch, done = divmod(CAPTION_FRESH_STEPS, steps)
    assert done, "the fresh run must stop mid-epoch"
    assert f"at epoch {epoch + 1}, step {done}" in resumed.text, str(resumed)
    assert f"stopped by max_steps at global step {CAPTION_RESUMED_STEPS}" in resumed.text
    epochs = epoch_frames(resumed, "img", TRAIN_IMAGES)
    first = epochs[0]
    assert first.desc == f"epoch {epoch + 1}/12", first.line
    assert first.n == done * CAPTION_BATCH, (
        f"the resumed bar starts at {first.n:g}, not at the {done * CAPTION_BATCH} images done: "
        f"{first.line!r}"
    )
    last = CAPTION_RESUMED_STEPS // steps + 1
    assert {f.desc for f in epochs} == {f"epoch {e}/12" for e in range(epoch + 1, last + 1)}
    check_decoding_bars(resumed)
