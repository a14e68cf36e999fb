"""Every file of a run directory, and of an exported SavedModel, damaged the ways disks and people
damage files: each CLI that reads it prints one `error:` line naming the file, exits with 2 and
shows no traceback. One tiny textgen run and one tiny captioning run (with its export) are
trained per module; every case damages a copy.

eval.json is not in the matrix: no CLI reads it (only bench/caption_quality.py does)."""

import json
import os
import shutil
import traceback

import numpy as np
import pytest
import tensorflow as tf

import captioning.caption
import captioning.evaluate
import captioning.export
import captioning.train
import textgen.export
import textgen.sample
import textgen.train
from captioning.training.caption_trainer import CaptionTrainer
from helpers import (
    CITIZEN_TEXT,
    QUIET,
    ROOT,
    caption_val_flags,
    one_error_line,
    run_python_module,
    tiny_caption_config,
)


@pytest.fixture(scope="module")
def text_run(train_tiny_run):
    return train_tiny_run("text_run", CITIZEN_TEXT, export=False)


@pytest.fixture(scope="module")
def caption_run(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("caption_run") / "run"
    CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, out, epochs=1, max_steps=1, eval_images=0, export=True),
        **QUIET,
    )
    return str(out)


# ---- ways to damage a file (or the variables/ directory of a SavedModel) ----


def truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def empty(path):
    open(path, "wb").close()


def random_bytes(path):
    open(path, "wb").write(np.random.default_rng(0).bytes(max(64, os.path.getsize(path))))


def directory_instead(path):
    os.remove(path)
    os.makedirs(os.path.join(path, "inside"))


def json_instead(value):
    def damage(path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(value, f)

    return damage


def hidden_size_a_string(path):
    config = json.load(open(path, encoding="utf-8"))
    json_instead({**config, "hidden_size": "abc"})(path)


def npz_without_its_arrays(path):
    with open(path, "wb") as f:
        np.savez(f, other=np.zeros(3))


def truncate_the_data(variables):
    truncate(os.path.join(variables, "variables.data-00000-of-00001"))


def remove_the_files(variables):
    for name in os.listdir(variables):
        os.remove(os.path.join(variables, name))


def random_files(variables):
    for name in os.listdir(variables):
        random_bytes(os.path.join(variables, name))


def file_instead(variables):
    shutil.rmtree(variables)
    open(variables, "w").write("variables")


def another_programs(path):
    """The same part of another program's SavedModel (one variable, one signature)."""
    module = tf.Module()
    module.weight = tf.Variable([1.0, 2.0])
    module.scale = tf.function(
        lambda x: {"y": x * module.weight}, input_signature=[tf.TensorSpec([2], tf.float32)]
    )
    other = os.path.join(os.path.dirname(os.path.dirname(path)), "other_saved_model")
    tf.saved_model.save(module, other, signatures={"scale": module.scale})
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.rename(os.path.join(other, os.path.basename(path)), path)


COMMON = {
    "truncated": truncate,
    "empty": empty,
    "random bytes": random_bytes,
    "a directory": directory_instead,
}
RUN_FILES = {
    "config.json": {
        **COMMON,
        "a list": json_instead([1, 2]),
        "a field of the wrong type": hidden_size_a_string,
    },
    "vocab.json": {
        **COMMON,
        "a list": json_instead(["a", "b"]),
        "numbers for tokens": json_instead({"tokens": [1, 2, 3], "unknown_token": None}),
    },
    "checkpoint.npz": {**COMMON, "an npz without its arrays": npz_without_its_arrays},
}
# A captioning run's vocabulary must also be a caption vocabulary.
# A text run also keeps its best evaluation's weights, which sample and export read by default.
TEXT_RUN_FILES = {**RUN_FILES, "checkpoint.best.npz": RUN_FILES["checkpoint.npz"]}
CAPTION_RUN_FILES = {
    **RUN_FILES,
    "vocab.json": {
        **RUN_FILES["vocab.json"],
        "no caption specials": json_instead(
            {"tokens": ["<unk>", "a", "b"], "unknown_token": "<unk>"}
        ),
    },
}
SAVED_MODEL_FILES = {
    "saved_model.pb": {**COMMON, "another program's": another_programs},
    "variables": {
        "truncated": truncate_the_data,
        "empty": remove_the_files,
        "random bytes": random_files,
        "a file": file_instead,
        "another program's": another_programs,
    },
}


# ---- the CLIs that read a run directory or a SavedModel ----

TEXTGEN_CLIS = ("textgen.sample", "textgen.export", "textgen.train --resume")
CAPTIONING_CLIS = (
    "captioning.caption",
    "captioning.evaluate",
    "captioning.export",
    "captioning.train --resume",
)
SAVED_MODEL_CLIS = ("captioning.caption", "captioning.evaluate")


def command(cli, model, tmp_path, data):
    """(main, argv) of `cli` reading `model`, a run directory or a SavedModel."""
    image = str(sorted((data / "images").glob("val_*.png"))[0])
    export_to = str(tmp_path / "export")
    return {
        "textgen.sample": (textgen.sample.main, [model, "--length", "5"]),
        "textgen.export": (textgen.export.main, [model, export_to, "--no-xla"]),
        "textgen.train --resume": (
            textgen.train.main,
            ["--out", model, "--resume", "--no-progress"],
        ),
        "captioning.caption": (captioning.caption.main, [image, "--model", model]),
        "captioning.evaluate": (
            captioning.evaluate.main,
            ["--model", model, *caption_val_flags(data)],
        ),
        "captioning.export": (captioning.export.main, [model, export_to]),
        "captioning.train --resume": (
            captioning.train.main,
            ["--out", model, "--resume", "--no-progress"],
        ),
    }[cli]


def run_cli(main, argv, capsys):
    """(exit status, stderr) of `main(argv)` as `python -m` would show them: an exception that
    escapes is a traceback and status 1."""
    try:
        status = main(argv)
    except Exception:
        return 1, capsys.readouterr().err + traceback.format_exc()
    return status, capsys.readouterr().err


def run_directory_cases():
    for clis, files in ((TEXTGEN_CLIS, TEXT_RUN_FILES), (CAPTIONING_CLIS, CAPTION_RUN_FILES)):
        for cli in clis:
            for name, damages in files.items():
                for damage in damages:
                    yield pytest.param(cli, name, damages[damage], id=f"{cli}-{name}-{damage}")


@pytest.mark.parametrize("cli, name, damage", run_directory_cases())
def test_a_damaged_run_directory_file_is_one_error_line(
    cli, name, damage, text_run, caption_run, shapes_data, tmp_path, capsys
):
    run = str(tmp_path / "run")
    shutil.copytree(
        text_run if cli.startswith("textgen") else caption_run,
        run,
        ignore=shutil.ignore_patterns("saved_model"),
    )
    damage(os.path.join(run, name))
    main, argv = command(cli, run, tmp_path, shapes_data)
    if name == "checkpoint.npz" and cli in ("textgen.sample", "textgen.export"):
        argv = [*argv, "--weights", "latest"]  # by default they read checkpoint.best.npz
    one_error_line(*run_cli(main, argv, capsys), name)


def saved_model_cases():
    for cli in SAVED_MODEL_CLIS:
        for name, damages in SAVED_MODEL_FILES.items():
            for damage in damages:
                yield pytest.param(cli, name, damages[damage], id=f"{cli}-{name}-{damage}")


@pytest.mark.parametrize("cli, name, damage", saved_model_cases())
def test_a_damaged_saved_model_is_one_error_line(
    cli, name, damage, caption_run, shapes_data, tmp_path, capsys
):
    exported = str(tmp_path / "saved_model")
    shutil.copytree(os.path.join(caption_run, "saved_model"), exported)
    damage(os.path.join(exported, name))
    one_error_line(*run_cli(*command(cli, exported, tmp_path, shapes_data), capsys), name)


@pytest.mark.integration
def test_the_real_stderr_has_only_the_error_line(caption_run, shapes_data, tmp_path):
    """TensorFlow logs a warning per variable it could not restore (through a handler capsys
    may not see) and C++ notices straight to file descriptor 2: run the CLI as a user would."""
    exported = str(tmp_path / "saved_model")
    shutil.copytree(os.path.join(caption_run, "saved_model"), exported)
    another_programs(os.path.join(exported, "variables"))
    image = str(sorted((shapes_data / "images").glob("val_*.png"))[0])
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI's own default, as a user runs it
    process = run_python_module("captioning.caption", image, "--model", exported, env=env)
    one_error_line(process.returncode, process.stderr, "variables")
