"""Where the files shipped with the project are: the embedded corpus and the bundled models.

Every module asks here instead of building paths from its own __file__, so that one place
decides how they are found (in the checkout today; as package data in an installed wheel).
"""

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent / "data"


def data_path(*parts):
    """The path of a shipped file or directory under data/, e.g. data_path("models", "shapes")."""
    return _ROOT.joinpath(*parts)


def default_corpus():
    """The embedded tiny-shakespeare corpus, the default --data of textgen.train."""
    return data_path("tinyshakespeare", "input.txt")


def bundled_model(name):
    """The run directory of a bundled model: "shapes" (captioning) or "shakespeare" (textgen)."""
    return data_path("models", name)
