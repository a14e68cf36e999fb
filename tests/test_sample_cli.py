"""`python -m textgen.sample` on bad input: exit status 2 and one `error:` line, no traceback."""

import functools

import pytest

import textgen.sample
from helpers import CITIZEN_TEXT, one_error_line, run_main


@pytest.fixture(scope="module")
def run_directory(train_tiny_run):
    return train_tiny_run("sample_run", CITIZEN_TEXT)


sample = functools.partial(run_main, textgen.sample.main)  # sample(capsys, *argv)


def test_prime_outside_the_vocabulary_lists_the_characters(run_directory, capsys):
    status, out, err = sample(capsys, run_directory, "--prime", "Fi#rst€", "--length", "20")
    message = one_error_line(status, err)
    assert "'#'" in message and "'€'" in message and "--unknown skip" in message
    assert out == ""


def test_unknown_skip_drops_them(run_directory, capsys):
    status, out, err = sample(
        capsys,
        run_directory,
        "--prime",
        "Fi#rst€",
        "--length",
        "20",
        "--unknown",
        "skip",
        "--seed",
        "3",
    )
    assert status == 0, err
    assert out.startswith("First") and len(out) == 20 + 1  # print adds the newline


def test_length_shorter_than_the_prime(run_directory, capsys):
    message = one_error_line(
        *sample(capsys, run_directory, "--prime", "First", "--length", "3")[::2]
    )
    assert "--length 3" in message and "5" in message


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--length", "0", "--length must be a positive"),
        ("--temperature", "-0.5", "--temperature must be >= 0"),
        ("--top-k", "-1", "--top-k must be >= 0"),
        ("--num-samples", "0", "--num-samples must be positive"),
    ],
)
def test_out_of_range_arguments(run_directory, capsys, flag, value, words):
    message = one_error_line(*sample(capsys, run_directory, flag, value)[::2])
    assert words in message


def test_missing_run_directory(tmp_path, capsys):
    message = one_error_line(*sample(capsys, str(tmp_path / "nowhere"))[::2])
    assert "does not exist" in message
