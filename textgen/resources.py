"""Where the files shipped with the project are: the embedded corpus and the bundled models.

They live in the repository's top-level data/ directory, which pyproject.toml ships in the wheel
as the package `textgen.data` (setuptools' package-dir maps the one onto the other, package-data
takes every file under it). They are found through `importlib.resources`, so an installed wheel
finds them in site-packages wherever the process runs, and an editable install finds data/ in the
checkout through setuptools' import hook. A checkout that is not installed at all (its root on
sys.path, nothing from pip) falls back to data/ beside the packages. Every module asks here
instead of building paths from its own __file__.
"""

import importlib.resources
from pathlib import Path

PACKAGE = "textgen.data"


def root():
    """The directory that holds the shipped files (data/ in the repository)."""
    try:
        shipped = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "data"
    # Wheels install as plain files, so this is a real directory: TensorFlow, NumPy and the
    # image readers take its paths.
    return Path(str(shipped))


def data_path(*parts):
    """The path of a shipped file or directory under data/, e.g. data_path("models", "shapes")."""
    return root().joinpath(*parts)


def default_corpus():
    """The embedded tiny-shakespeare corpus, the default --data of textgen.train."""
    return data_path("tinyshakespeare", "input.txt")


def bundled_model(name):
    """The run directory of a bundled model: "shapes" (captioning) or "shakespeare" (textgen)."""
    return data_path("models", name)
