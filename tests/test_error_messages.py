"""Library errors name parameters (`batch_size`), as a Python caller passes them; the CLIs print
the same message with their flags (--batch-size), through `textgen.errors.as_cli_message`."""

import ast
import dataclasses
import os

import pytest

from captioning.config import CaptionTrainConfig
from helpers import ROOT
from textgen import train as train_cli
from textgen.config import PrepareConfig, TrainConfig, validate
from textgen.errors import UsageError, as_cli_message

# The rooms below the CLIs, and the configs every CLI parses into.
LIBRARY = [
    "textgen/config.py",
    "captioning/config.py",
    *(
        os.path.join(room, name)
        for room in (
            "textgen/corpus",
            "textgen/network",
            "textgen/generation",
            "textgen/training",
            "captioning/datasets",
            "captioning/metrics",
            "captioning/models",
            "captioning/training",
            "captioning/inference",
        )
        for name in sorted(os.listdir(os.path.join(ROOT, room)))
        if name.endswith(".py")
    ),
]
ERRORS = {"UsageError", "TrainingDiverged", "DiskFull", "TrainingInterrupted"}


def test_a_library_error_names_the_parameter_and_the_cli_its_flag(tiny_config, capsys):
    config = dataclasses.replace(tiny_config, learning_rate=-1.0)
    with pytest.raises(UsageError, match="^`learning_rate` must be positive, got -1.0$"):
        validate(config)
    status = train_cli.main(["--data", tiny_config.data, "--learning-rate", "-1"])
    assert status == 2
    assert capsys.readouterr().err.strip() == "error: --learning-rate must be positive, got -1.0"


def test_only_parameters_the_clis_know_become_flags():
    train_cli.build_parser()  # registers textgen.train's spellings
    message = "`batch_size` 8 x `seq_length` 20; see `tokenize_tf` and `python -m textgen.train`"
    assert as_cli_message(message) == (
        "--batch-size 8 x --seq-length 20; see `tokenize_tf` and `python -m textgen.train`"
    )
    assert as_cli_message("`export` is on") == "--no-export is on"  # a switch's own spelling


def flags_in_error_messages(path):
    """(line, flag) of every --flag of a known parameter in an error raised by `path`."""
    parameters = {
        field.name
        for config in (TrainConfig, PrepareConfig, CaptionTrainConfig)
        for field in dataclasses.fields(config)
    }
    tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        if name not in ERRORS:
            continue
        for sub in (s for arg in node.args for s in ast.walk(arg)):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                for word in sub.value.split():
                    flag = word.strip("(),.;:'\"").lstrip("-").replace("-", "_")
                    command = "python -m" in sub.value  # a command line spells its flags
                    if word.startswith("--") and flag in parameters and not command:
                        found.append((sub.lineno, word))
    return found


def test_library_errors_do_not_spell_flags():
    spelled = {path: flags_in_error_messages(path) for path in LIBRARY}
    assert {path: found for path, found in spelled.items() if found} == {}


def test_the_flag_check_can_fail(tmp_path):
    module = tmp_path / "example.py"  # an absolute path: os.path.join keeps it
    module.write_text('raise UsageError(f"--batch-size {n} is too large")\n', encoding="utf-8")
    assert flags_in_error_messages(str(module)) == [(1, "--batch-size")]
