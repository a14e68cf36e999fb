"""textgen.sample --stream and --interactive: streamed text is the text `sample` returns, written
one compiled block at a time and flushed after each; the default on a terminal; the prompt loop
driven through a pipe and, as a person types, in tmux."""

import os
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import textgen.sample
from helpers import CITIZEN_TEXT, python_module
from textgen.corpus.vocabulary import Vocabulary
from textgen.network.language_model import LanguageModel


@pytest.fixture(scope="module")
def run_directory(train_tiny_run):
    return train_tiny_run("stream_run", CITIZEN_TEXT, num_layers=2, export=False)


@pytest.fixture(scope="module")
def model(run_directory):
    return LanguageModel.from_run_directory(run_directory)


class Terminal:
    """A stdout that says it is a terminal and records every write and flush."""

    def __init__(self, tty=True):
        self.tty = tty
        self.events = []

    def isatty(self):
        return self.tty

    def write(self, text):
        self.events.append(("write", text))

    def flush(self):
        self.events.append(("flush", None))

    @property
    def text(self):
        return "".join(text for kind, text in self.events if kind == "write")


@pytest.mark.parametrize(
    "prime, length, temperature, top_k, seed",
    [
        (None, 150, 1.0, 0, 3),  # no prime, three blocks, the last cut short
        ("First", 70, 0.0, 0, 0),  # argmax
        ("All:\nSp", 64 + 7, 0.8, 3, 5),  # top-k
        ("Speak", 5, 1.0, 0, 0),  # only the prime
    ],
)
def test_streamed_text_is_the_sampled_text(model, prime, length, temperature, top_k, seed):
    pieces = list(model.stream(prime, length, temperature, top_k, seed))
    assert "".join(pieces) == model.sample(prime, length, temperature, top_k, 1, seed)[0]
    if prime:
        assert pieces[0] == prime
    blocks = pieces[1:] if prime else pieces
    new = length - len(prime or "")
    assert [len(piece) for piece in blocks] == [64] * (new // 64) + [new % 64] * (new % 64 > 0)


def test_word_level_stream_is_the_sampled_text():
    vocabulary = Vocabulary(
        ["<unk>", "\n", "the", "king", ",", ".", "(", ")", "I'll", "go", "--"],
        unknown_token="<unk>",
    )
    model = LanguageModel(
        vocabulary, num_layers=1, hidden_size=16, embedding_size=8, level="word", segmenter="regex"
    )
    model.build()
    rng = np.random.default_rng(1)
    for variable in model.variables:
        variable.assign(rng.normal(0, 0.8, variable.shape).astype(np.float32))
    for seed in range(3):
        pieces = list(model.stream("the king", 150, 1.0, 0, seed))
        assert "".join(pieces) == model.sample("the king", 150, 1.0, 0, 1, seed)[0]
        assert len(pieces) > 2  # it did stream


def test_stream_flushes_after_every_block(run_directory, monkeypatch):
    terminal = Terminal(tty=False)
    monkeypatch.setattr(sys, "stdout", terminal)
    argv = [run_directory, "--stream", "--prime", "First", "--length", "200", "--seed", "4"]
    assert textgen.sample.main(argv) == 0
    kinds = [kind for kind, _ in terminal.events]
    # The prime, ceil(195 / 64) = 4 blocks and the line end, each written and flushed at once.
    assert kinds == ["write", "flush"] * 6
    model = LanguageModel.from_run_directory(run_directory)
    assert terminal.text == model.sample("First", 200, seed=4)[0] + "\n"


def test_stream_is_the_default_on_a_terminal_with_one_sample(run_directory, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert textgen.sample.main([run_directory, "--length", "150"]) == 0
    assert sum(kind == "flush" for kind, _ in terminal.events) == 4  # 3 blocks + line end
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert textgen.sample.main([run_directory, "--length", "150", "--num-samples", "2"]) == 0
    assert terminal.text.startswith("---- sample 1 ----\n")


def test_stream_of_several_samples_is_one_error_line(run_directory, capsys):
    status = textgen.sample.main([run_directory, "--stream", "--num-samples", "2"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "--num-samples 1" in err


# ---- --interactive ----


def python_command(run_directory, *flags):
    return python_module("textgen.sample", run_directory, "--interactive", *flags)


def environment():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.mark.integration
def test_interactive_through_a_pipe(run_directory, model):
    typed = "First\n:temp 0\n:len 30\nAll:\n:bogus 1\n:len -3\n:reset\n\nSpe€ak\n"
    result = subprocess.run(
        python_command(run_directory, "--length", "20", "--seed", "7"),
        input=typed,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    continuations = result.stdout.split("\n")
    # Each continuation ends with a line end, but generated text can hold line ends too, so the
    # expected texts are built the same way and compared as one string.
    first = model.sample("First", 5 + 20, 1.0, 0, 1, 7)[0][5:]
    argmax = model.sample("All:", 4 + 30, 0.0)[0][4:]
    reset = model.sample(None, 20, 1.0, 0, 1, 7)[0]  # :reset restarts the seeds too
    assert result.stdout == first + "\n" + argmax + "\n" + reset + "\n", continuations
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert "':bogus 1' is not a command" in errors[0]
    assert "--length must be a positive" in errors[1]
    assert "'€'" in errors[2] and "--unknown skip" in errors[2]
    assert "temperature=0.0" in result.stderr and "length=30" in result.stderr


# Slow: a second Python start-up with TensorFlow; the pipe test above is its quick form.
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_interactive_in_tmux_as_a_person_types(run_directory, model, tmp_path):
    socket = f"textgen-test-{uuid.uuid4().hex[:8]}"  # a tmux server of this test's own

    def tmux(*args):
        return subprocess.run(
            ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30
        )

    def screen():
        return tmux("capture-pane", "-p", "-t", "session", "-S", "-50").stdout

    def wait_for(predicate, what, seconds=120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"no {what} on the screen after {seconds} s:\n{screen()}")

    done = tmp_path / "exit_status"
    command = " ".join(python_command(run_directory, "--seed", "3", "--length", "12"))
    shell = f"cd {os.getcwd()} && TF_CPP_MIN_LOG_LEVEL=3 {command}; echo $? > {done}"
    started = tmux("new-session", "-d", "-s", "session", "-x", "120", "-y", "40", shell)
    assert started.returncode == 0, started.stderr
    try:
        wait_for(lambda text: text.rstrip().endswith(">"), "prompt")
        tmux("send-keys", "-t", "session", "All:", "Enter")
        wait_for(lambda text: text.count(">") >= 2, "second prompt")
        tmux("send-keys", "-t", "session", ":len 5", "Enter")
        wait_for(lambda text: "length=5" in text, "setting")
        tmux("send-keys", "-t", "session", "First", "Enter")
        wait_for(lambda text: text.count(">") >= 4, "fourth prompt")
        text = screen()
        # Seeds 3 and 4: the first and second continuation of a loop started with --seed 3.
        for typed, length, seed in (("All:", 12, 3), ("First", 5, 4)):
            continuation = model.sample(typed, len(typed) + length, 1.0, 0, 1, seed)[0]
            continuation = continuation[len(typed) :]
            assert continuation.strip()
            shown = text.split(f"> {typed}", 1)[1]
            assert all(line.rstrip() in shown for line in continuation.split("\n")), shown
        tmux("send-keys", "-t", "session", "C-d")
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.read_text().strip() == "0"
    finally:
        tmux("kill-server")
