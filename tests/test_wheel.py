"""The wheel works outside the checkout: it ships the embedded corpus and the bundled models as
package data, and its console scripts run from any directory.

The wheel is built from this checkout (`pip wheel --no-build-isolation`: setuptools is the one
in the test's environment, so nothing is downloaded) and installed, without dependencies, into a
fresh virtual environment in a temporary directory. That environment borrows TensorFlow and the
other dependencies from the test's own site-packages through a .pth file (a path in a .pth file
is added to sys.path, its own .pth files are not run, so the checkout's editable install stays
out), so the test needs no network. Every command runs in the temporary directory, with a
PYTHONPATH that names nothing, so only the installed wheel can answer.

The quick form (the normal suite) builds, installs, checks the file list and the entry points,
and samples from the bundled text model through `textgen-sample`; the slow form also captions a
sample image with the bundled captioner, scores a text, and trains 3 steps on the embedded corpus.
"""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from helpers import ROOT

pytestmark = pytest.mark.integration  # pip, a virtual environment, the console scripts

SCRIPTS = {
    "textgen-train": "textgen.train:main",
    "textgen-sample": "textgen.sample:main",
    "textgen-score": "textgen.score:main",
    "textgen-export": "textgen.export:main",
    "captioning-train": "captioning.train:main",
    "captioning-caption": "captioning.caption:main",
    "captioning-evaluate": "captioning.evaluate:main",
    "captioning-export": "captioning.export:main",
}
SHIPPED = [
    "textgen/data/tinyshakespeare/input.txt",
    "textgen/data/models/shakespeare/checkpoint.npz",
    "textgen/data/models/shakespeare/config.json",
    "textgen/data/models/shakespeare/vocab.json",
    "textgen/data/models/shapes/checkpoint.npz",
    "textgen/data/models/shapes/config.json",
    "textgen/data/models/shapes/vocab.json",
    "textgen/data/samples/val_000000.png",
    "textgen/network/lstm_recurrence.cc",
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the fresh environment's bin directory, a working directory outside the
    checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(base / "dist"), ROOT],
        cwd=base,
    )
    (wheel,) = (base / "dist").glob("*.whl")
    environment = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(environment)], cwd=base)
    python = environment / "bin" / "python"
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base
    ).stdout.strip()
    with open(os.path.join(purelib, "borrowed_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        cwd=base,
    )
    work = base / "elsewhere"
    work.mkdir()
    return wheel, environment / "bin", work


def run(command, cwd, check=True, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_wheel_ships_the_data_and_the_console_scripts(installed):
    wheel, bin_directory, work = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert set(SHIPPED) <= names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "bench/"))]
    for name, target in SCRIPTS.items():
        assert f"{name} = {target}" in scripts
        assert (bin_directory / name).is_file()
    # textgen comes from the new environment (found without running it: importing textgen
    # loads TensorFlow), its data beside it.
    where = run(
        [
            str(bin_directory / "python"),
            "-c",
            "import importlib.util; print(importlib.util.find_spec('textgen').origin)",
        ],
        cwd=work,
    )
    package = os.path.dirname(where.stdout.strip())
    assert package.startswith(str(bin_directory.parent))
    corpus = os.path.join(package, "data", "tinyshakespeare", "input.txt")
    assert os.path.getsize(corpus) == os.path.getsize(
        os.path.join(ROOT, "data", "tinyshakespeare", "input.txt")
    )
    # The bundled text model, found with no RUN_DIR, through the console script: through
    # importlib.resources, as textgen.resources' fallback (data/ beside the package's folder)
    # does not exist in site-packages.
    sample = run(
        [
            str(bin_directory / "textgen-sample"),
            "--length",
            "60",
            "--prime",
            "ROMEO:",
            "--seed",
            "1",
        ],
        cwd=work,
    )
    assert sample.stdout.startswith("ROMEO:") and len(sample.stdout.strip()) >= 50


@pytest.mark.slow
def test_the_installed_commands_caption_score_and_train(installed):
    _, bin_directory, work = installed
    image = os.path.join(ROOT, "data", "samples", "val_000000.png")
    caption = run([str(bin_directory / "captioning-caption"), image], cwd=work)
    assert "circle" in caption.stdout or "square" in caption.stdout or "triangle" in caption.stdout
    (work / "text.txt").write_text(
        "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    )
    score = run([str(bin_directory / "textgen-score"), "text.txt", "--json"], cwd=work)
    assert json.loads(score.stdout.splitlines()[0])["bits_per_char"] < 4
    train = run(
        [str(bin_directory / "textgen-train"), "--max-steps", "3", "--out", "run"]
        + ["--no-export", "--no-progress", "--sample-every", "0"],
        cwd=work,
    )
    assert "stopped by max_steps at global step 3" in train.stdout
    with open(work / "run" / "config.json", encoding="utf-8") as f:
        assert f.read().count(str(bin_directory.parent)) >= 1  # the installed corpus
    assert (work / "run" / "metrics.jsonl").is_file() and (work / "run" / "logs").is_dir()
