"""Builds textgen's C++ LSTM ops (lstm_recurrence.cc) for this machine once, and loads them.

`fused_kernels.lstm_layer` runs the LSTM recurrence through these ops when they load, and through
TensorFlow ops otherwise (the same results up to float rounding; which is faster depends on the
host, so `--fused auto` measures it: bench/README.md has the figures). Like
`torch.utils.cpp_extension.load`, the source is compiled the first time it is needed, with the
installed TensorFlow's include and link flags (`tf.sysconfig`) and `-march=native`, into a cache
directory keyed by everything that affects the binary (the source, the TensorFlow version and
flags, the compiler, the CPU's feature flags), so a TensorFlow upgrade or a home directory shared
by different machines gets a fresh build. That takes about 30 s and needs a C++17 compiler (`$CXX`,
default `g++`). The compiled library is written to a temporary name and renamed into place, so
concurrent first runs cannot load half a file.

Environment:
    TEXTGEN_NATIVE_OPS=0   never build or load the ops (use the TensorFlow-op kernel).
    TEXTGEN_CACHE_DIR      where builds go (default: $XDG_CACHE_HOME/textgen, else
                           ~/.cache/textgen).
    CXX                    the compiler.

Only this project's own source is compiled and loaded; nothing from a model or a run directory.
"""

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tensorflow as tf

SOURCE = Path(__file__).with_name("lstm_recurrence.cc")
LIBRARY_NAME = "textgen_lstm_recurrence.so"


def cache_dir():
    if os.environ.get("TEXTGEN_CACHE_DIR"):
        return Path(os.environ["TEXTGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "textgen"


def compiler():
    """The C++ compiler's path, or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _cpu_flags():
    """The CPU feature flags -march=native compiles for (Linux; the processor name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _build_command(cxx, output, native):
    return [
        cxx,
        "-shared",
        "-fPIC",
        "-O3",
        *(["-march=native"] if native else []),
        "-Wno-deprecated-declarations",
        *tf.sysconfig.get_compile_flags(),
        str(SOURCE),
        "-o",
        str(output),
        *tf.sysconfig.get_link_flags(),
    ]


def _build(cxx, target):
    """Compiles SOURCE into `target` (atomically); returns None, or the compiler's last error
    line."""
    target.parent.mkdir(parents=True, exist_ok=True)
    error = None
    for native in (True, False):  # a compiler without -march=native still gets a portable build
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
        os.close(fd)
        try:
            result = subprocess.run(
                _build_command(cxx, partial, native), capture_output=True, text=True
            )
            if result.returncode == 0:
                os.replace(partial, target)
                return None
            lines = [line for line in result.stderr.splitlines() if "error" in line]
            error = (lines or result.stderr.splitlines() or ["no output"])[-1].strip()
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return error


def library_path():
    """Where this machine's build of the ops lives (whether or not it exists yet)."""
    cxx = compiler() or "none"
    version = (
        subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
        if cxx != "none"
        else ""
    )
    key = hashlib.sha256(
        "\n".join(
            [
                SOURCE.read_text(),
                tf.__version__,
                " ".join(tf.sysconfig.get_compile_flags()),
                " ".join(tf.sysconfig.get_link_flags()),
                cxx,
                version,
                platform.machine(),
                _cpu_flags(),
            ]
        ).encode()
    ).hexdigest()[:16]
    return cache_dir() / "ops" / key / LIBRARY_NAME


_loaded = []  # the ops module, once a build has been loaded into this process


def _note(message):
    print(f"textgen: {message}", file=sys.stderr, flush=True)


_disabled = []  # non-empty inside `disabled()`


@contextlib.contextmanager
def disabled():
    """Inside this block `lstm_ops()` returns None, so models traced here run on TensorFlow ops
    (a graph keeps what it was traced with): for comparisons such as bench/train_throughput.py."""
    _disabled.append(True)
    try:
        yield
    finally:
        _disabled.pop()


def lstm_ops():
    """The loaded ops module (`textgen_lstm_forward`, `textgen_lstm_backward`), or None when they
    are switched off, no compiler is found, or the build fails (a one-line note says which)."""
    if _disabled or os.environ.get("TEXTGEN_NATIVE_OPS", "1") == "0":
        return None
    return _build_and_load()


@functools.cache
def _build_and_load():
    cxx = compiler()
    if cxx is None:
        _note(
            f"no C++ compiler ({os.environ.get('CXX', 'g++')}) found, so the LSTM runs on "
            "TensorFlow ops; install g++ (or set CXX) to build textgen's C++ LSTM kernel, "
            "which is faster on some hosts"
        )
        return None
    target = library_path()
    if not target.exists():
        _note(
            f"building the C++ LSTM kernel for this machine into {target.parent} (once, about 30 s)"
        )
        try:
            error = _build(cxx, target)
        except OSError as failure:  # e.g. a cache directory that cannot be written
            error = f"{type(failure).__name__}: {failure}"
        if error is not None:
            _note(
                f"could not build the C++ LSTM kernel ({error}); the LSTM runs on TensorFlow "
                "ops. Set TEXTGEN_NATIVE_OPS=0 to skip the attempt"
            )
            return None
    if _loaded:
        # TensorFlow refuses a second library registering the same kernels, and one built
        # elsewhere (another TEXTGEN_CACHE_DIR) from the same source is the same code.
        return _loaded[0]
    try:
        _loaded.append(tf.load_op_library(str(target)))
        return _loaded[0]
    except (tf.errors.NotFoundError, OSError) as error:
        _note(
            f"could not load {target} ({str(error).splitlines()[0]}); the LSTM runs on "
            "TensorFlow ops. Delete that file to rebuild it"
        )
        return None
