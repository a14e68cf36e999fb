"""Bad input to `python -m textgen.train`: one line naming the problem and the fix, exit status 2,
no traceback, nothing written or overwritten."""

import os

import pytest

from helpers import TINY_RUN_FLAGS, one_error_line, run_python_module, snapshot
from textgen import train as train_cli


def run_cli(capsys, argv):
    status = train_cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.err.strip()


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "run")


def test_missing_corpus(capsys, tmp_path, out):
    status, err = run_cli(
        capsys, ["--data", str(tmp_path / "nope.txt"), "--out", out] + TINY_RUN_FLAGS
    )
    one_error_line(status, err, "does not exist", "--data")
    assert not os.path.exists(out)


def test_directory_as_corpus(capsys, tmp_path, out):
    status, err = run_cli(capsys, ["--data", str(tmp_path), "--out", out] + TINY_RUN_FLAGS)
    one_error_line(status, err, "is a directory")
    assert not os.path.exists(out)


def test_empty_corpus(capsys, tmp_path, out):
    (tmp_path / "empty.txt").write_bytes(b"")
    status, err = run_cli(
        capsys, ["--data", str(tmp_path / "empty.txt"), "--out", out] + TINY_RUN_FLAGS
    )
    one_error_line(status, err, "is empty")
    assert not os.path.exists(out)


def test_invalid_bytes_give_the_byte_offset(capsys, tmp_path, out):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"abc\n" * 100 + b"caf\xe9\n")
    status, err = run_cli(capsys, ["--data", str(path), "--out", out] + TINY_RUN_FLAGS)
    one_error_line(status, err, "byte offset 403", "line 101", "--encoding")
    assert not os.path.exists(out)


def test_corpus_too_short_gives_the_minimum(capsys, tmp_path, out):
    path = tmp_path / "short.txt"
    path.write_text("to be or not to be")
    status, err = run_cli(capsys, ["--data", str(path), "--out", out] + TINY_RUN_FLAGS)
    one_error_line(status, err, "has 18 characters", "at least 106")
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "flag, value, allowed",
    [
        ("--hidden-size", "0", "positive integer"),
        ("--num-layers", "-1", "positive integer"),
        ("--embedding-size", "0", "positive integer"),
        ("--batch-size", "0", "positive integer"),
        ("--seq-length", "-5", "positive integer"),
        ("--epochs", "0", "positive integer"),
        ("--learning-rate", "0", "must be positive"),
        ("--learning-rate", "-0.1", "must be positive"),
        ("--grad-clip", "-1", ">= 0"),
        ("--dropout", "1.0", "[0, 1)"),
        ("--val-fraction", "0", "(0, 0.5]"),
        ("--val-fraction", "0.7", "(0, 0.5]"),
        ("--lr-decay", "1.5", "(0, 1]"),
        ("--max-minutes", "-2", ">= 0"),
        ("--cell", "transformer", "lstm, gru or rnn"),
        ("--optimizer", "lion", "adam, rmsprop, adagrad, sgd"),
    ],
)
def test_out_of_range_values(capsys, small_corpus, out, flag, value, allowed):
    status, err = run_cli(
        capsys, ["--data", str(small_corpus), "--out", out, *TINY_RUN_FLAGS, flag, value]
    )
    one_error_line(status, err, flag, allowed)
    assert not os.path.exists(out)


def test_resume_without_checkpoint(capsys, small_corpus, tmp_path):
    status, err = run_cli(
        capsys,
        ["--data", str(small_corpus), "--out", str(tmp_path / "none"), "--resume"] + TINY_RUN_FLAGS,
    )
    one_error_line(status, err, "no checkpoint", "without --resume")
    assert not os.path.exists(tmp_path / "none")
    # A directory that exists but holds no run is left as it was.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    before = snapshot(other)
    status, err = run_cli(
        capsys, ["--data", str(small_corpus), "--out", str(other), "--resume"] + TINY_RUN_FLAGS
    )
    one_error_line(status, err, "no checkpoint", "without --resume")
    assert snapshot(other) == before


def trained_run(capsys, small_corpus, out):
    status, _ = run_cli(
        capsys, ["--data", str(small_corpus), "--out", out, "--max-steps", "2", *TINY_RUN_FLAGS]
    )
    assert status == 0
    return snapshot(out)


def test_resume_with_a_config_that_does_not_match(capsys, small_corpus, out):
    before = trained_run(capsys, small_corpus, out)
    status, err = run_cli(
        capsys, ["--data", str(small_corpus), "--out", out, "--resume", "--hidden-size", "32"]
    )
    one_error_line(status, err, "does not match", "--hidden-size 32", "run has 16")
    assert snapshot(out) == before


def test_out_directory_with_another_run(capsys, small_corpus, out):
    before = trained_run(capsys, small_corpus, out)
    status, err = run_cli(capsys, ["--data", str(small_corpus), "--out", out] + TINY_RUN_FLAGS)
    one_error_line(status, err, "already holds a run", "--resume")
    assert snapshot(out) == before


def test_resume_takes_the_saved_config(capsys, small_corpus, out):
    trained_run(capsys, small_corpus, out)
    status, _ = run_cli(capsys, ["--out", out, "--resume", "--max-steps", "4", "--no-progress"])
    assert status == 0


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    text = capsys.readouterr().out
    for flag in [
        "--data",
        "--encoding",
        "--cell",
        "--num-layers",
        "--hidden-size",
        "--embedding-size",
        "--dropout",
        "--batch-size",
        "--seq-length",
        "--epochs",
        "--max-minutes",
        "--optimizer",
        "--learning-rate",
        "--grad-clip",
        "--val-fraction",
        "--seed",
        "--out",
        "--resume",
        "--sample-every",
        "--checkpoint-every",
    ]:
        assert flag in text


@pytest.mark.integration
def test_real_process_prints_exactly_one_line(tmp_path):
    """TensorFlow's start-up notices must not bury the error (they go to fd 2 at import)."""
    result = run_python_module(
        "textgen.train",
        *["--data", tmp_path / "missing.txt", "--out", tmp_path / "run"],
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: corpus file {tmp_path / 'missing.txt'} does not exist; pass --data with the path "
        "of a text file"
    ]
