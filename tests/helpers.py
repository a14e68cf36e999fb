"""What several test modules share, imported by name (pytest puts tests/ on sys.path): texts to
train on, the tiny layouts as flags, the captioning test data's layout, checks of one-line errors
and of checkpoints, and children that run `python -m ...`. The fixtures are in conftest.py.

TensorFlow is imported inside the functions that need it, so that conftest.py (which imports this
module) can set TensorFlow's environment before anything loads it."""

import inspect
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# ---- texts to train on: the opening of tiny-shakespeare, in three lengths ----
FIRST_CITIZEN = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
SPEAK = "All:\nSpeak, speak.\n\n"
FAMISH = "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
RESOLVED = "All:\nResolved. resolved.\n\n"
CITIZEN_TEXT = (FIRST_CITIZEN + SPEAK) * 30
FAMISH_TEXT = (FIRST_CITIZEN + SPEAK + FAMISH) * 30
SMALL_TEXT = (FIRST_CITIZEN + SPEAK + FAMISH + RESOLVED) * 40  # conftest's small_corpus

# The trainers' options for a run that prints nothing.
QUIET = {"log": lambda message: None, "progress_bar": False}

# The layout of conftest's tiny_config on textgen.train's command line (32 units, batches of
# 8 x 20, no samples, no export).
TINY_CONFIG_FLAGS = [
    "--hidden-size",
    "32",
    "--embedding-size",
    "16",
    "--batch-size",
    "8",
    "--seq-length",
    "20",
    "--sample-every",
    "0",
    "--no-export",
]
# The layout of conftest's train_tiny_run on textgen.train's command line (16 units, batches of
# 4 x 10, no samples), without a progress bar or an export.
TINY_RUN_FLAGS = [
    "--hidden-size",
    "16",
    "--embedding-size",
    "8",
    "--batch-size",
    "4",
    "--seq-length",
    "10",
    "--sample-every",
    "0",
    "--no-progress",
    "--no-export",
]


# ---- captioning: conftest's shapes_data and a tiny model to train on it ----
TRAIN_IMAGES, VAL_IMAGES = 12, 4


def caption_data_flags(data):
    """The annotation and image arguments of the shapes data in `data`, by field name."""
    return dict(
        annotations=str(data / "annotations" / "captions_train.json"),
        images=str(data / "images"),
        val_annotations=str(data / "annotations" / "captions_val.json"),
    )


def caption_val_flags(data):
    """captioning.evaluate's arguments for the validation half of the shapes data in `data`."""
    return [
        "--annotations",
        str(data / "annotations" / "captions_val.json"),
        "--images",
        str(data / "images"),
    ]


def tiny_caption_config(data, out, **overrides):
    """A captioning config that trains a tiny model on the shapes data in `data` (3 steps an
    epoch, 2 epochs) into `out`."""
    from captioning.config import CaptionTrainConfig

    values = dict(
        caption_data_flags(data),
        out=str(out),
        encoder_filters="4,8",
        feature_size=16,
        hidden_size=16,
        embedding_size=8,
        batch_size=4,
        captions_per_image=2,
        epochs=2,
        eval_images=4,
        checkpoint_every=2,
        export=False,
    )
    values.update(overrides)
    return CaptionTrainConfig(**values)


def tiny_caption_flags(data, out):
    """tiny_caption_config on captioning.train's command line, for 1 epoch, no evaluation, no
    export and no progress bar."""
    flags = [
        "--out",
        out,
        "--encoder-filters",
        "4,8",
        "--feature-size",
        "16",
        "--hidden-size",
        "16",
        "--embedding-size",
        "8",
        "--batch-size",
        "4",
        "--captions-per-image",
        "2",
        "--epochs",
        "1",
        "--eval-images",
        "0",
        "--no-export",
        "--no-progress",
    ]
    for name, value in caption_data_flags(data).items():
        flags += ["--" + name.replace("_", "-"), value]
    return flags


class Log(list):
    """Collects log lines; `log.text` is all of them."""

    def __call__(self, message):
        self.append(message)

    @property
    def text(self):
        return "\n".join(self)


# ---- checkpoints ----
def checkpoint_arrays(run):
    """{name: array} of every variable in RUN/checkpoint.npz (weights, optimizer slots,
    statistics), without the progress record and the checksum."""
    with np.load(os.path.join(run, "checkpoint.npz"), allow_pickle=False) as data:
        return {k: data[k] for k in data.files if "/" in k}


def assert_same_arrays(run_a, run_b, rtol=None, atol=None):
    """The two runs' checkpoints hold the same variables with the same values: equal to the bit,
    or, given rtol and atol, within them."""
    a, b = checkpoint_arrays(run_a), checkpoint_arrays(run_b)
    assert a.keys() == b.keys()
    for key in a:
        if rtol is None and atol is None:
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
        else:
            np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=atol, err_msg=key)


def assert_same_checkpoint(run_a, run_b, rtol=1e-4, atol=2e-5):
    """Two textgen runs at the same step with the same weights, slots, carried states and step
    losses. Equal within float tolerance: threaded CPU reductions may round differently per
    process."""
    from textgen.training.metrics_log import FILE, read_rows, step_losses
    from textgen.training.run_directory import RunDirectory

    a, progress_a = RunDirectory(run_a).load_checkpoint()
    b, progress_b = RunDirectory(run_b).load_checkpoint()
    assert progress_a["global_step"] == progress_b["global_step"]
    assert progress_a["epoch"] == progress_b["epoch"]
    assert progress_a["step_in_epoch"] == progress_b["step_in_epoch"]
    for group in ("model", "optimizer", "states"):
        assert len(a[group]) == len(b[group])
        for x, y in zip(a[group], b[group]):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
    losses_a, losses_b = (step_losses(read_rows(os.path.join(r, FILE))) for r in (run_a, run_b))
    assert len(losses_a) == progress_a["global_step"]  # each step once, a resume's included
    np.testing.assert_allclose(losses_a, losses_b, rtol=rtol)


def rewrite_checkpoint(path, change):
    """Rewrites checkpoint.npz with `change(arrays)` applied and the old checksum kept: what a
    bit flip that the zip layer does not notice (or a hand edit) leaves behind."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k].copy() for k in data.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def checkpoint_step(run):
    """The global step of the run's checkpoint; -1 while it has none that can be read (a
    checkpoint being replaced is read as the old or the new one, or not at all)."""
    from textgen.training.run_directory import RunDirectory

    try:
        return RunDirectory(run).load_checkpoint()[1]["global_step"]
    except Exception:
        return -1


def wait_for_checkpoint(run, step, process, timeout=120):
    """Returns once the run that `process` trains has a checkpoint at `step` or later; fails if
    the process exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint_step(run) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step}: exit status {process.poll()}")


# ---- the command-line programs' output ----
def run_main(main, capsys, *argv):
    """(exit status, stdout, stderr) of a CLI's `main` called with `argv` (each made a string)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(status, err, *fragments, exit_status=2):
    """Checks a CLI's failure: the exit status, and a stderr of one `error: ` line (with or
    without its line end) holding each of `fragments` and no traceback. Returns that line."""
    assert status == exit_status, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(directory):
    """Every file under `directory` (a run's logs/ included) by relative path, with its bytes."""
    files = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = f.read()
    return files


# ---- child processes ----
def python_module(module, *args):
    """The command `python -m MODULE ARGS` with this interpreter, each argument a string."""
    return [sys.executable, "-m", module, *map(str, args)]


def run_python_module(module, *args, **options):
    """Runs `python -m MODULE ARGS` to its end: the CompletedProcess, its output as text.
    `options` go to subprocess.run (a timeout of 300 s unless they give one)."""
    return subprocess.run(
        python_module(module, *args),
        capture_output=True,
        text=True,
        **{"timeout": 300, **options},
    )


def run_python(code, timeout=300, env=None):
    """Runs `code` (dedented) in a fresh interpreter in tests/, which can import conftest and
    this module; fails with its output unless it exits 0. Returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=TESTS,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def file_size_limit(size):
    """A preexec_fn that limits the child's files to `size` bytes, so that every write past it
    fails as on a full disk (EFBIG for ENOSPC); SIGXFSZ is ignored so that the write fails
    instead of killing the process."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit_file_size


# ---- Keras layers' configs ----
def constructor_arguments(cls):
    """The names of `cls.__init__`'s own arguments (not self, not **kwargs) and their defaults."""
    return {
        name: parameter.default
        for name, parameter in list(inspect.signature(cls.__init__).parameters.items())[1:]
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }


def assert_config_round_trip(cls, arguments, at_default=()):
    """`cls(**arguments)`'s get_config holds every constructor argument at the value passed (the
    keras-hub rule), and from_config gives back the same config. `arguments` must name every
    argument, each at a value other than its default (but those in `at_default`), so that a
    missing or hard-coded one fails. Returns the layer and its clone."""
    from textgen.corpus.vocabulary import Vocabulary

    defaults = constructor_arguments(cls)
    assert sorted(arguments) == sorted(defaults), "the test must pass every constructor argument"
    for name, value in arguments.items():
        if name not in at_default:
            assert value != defaults[name], f"{name} is at its default: a lost value would pass"
    layer = cls(**arguments)
    config = layer.get_config()
    for name, value in arguments.items():
        assert name in config, f"get_config() lacks the constructor argument {name}"
        expected = value.tokens if isinstance(value, Vocabulary) else value
        assert config[name] == (list(expected) if isinstance(expected, tuple) else expected), name
    clone = cls.from_config(config)
    assert clone.get_config() == config
    return layer, clone
