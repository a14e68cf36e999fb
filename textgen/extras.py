"""Optional dependencies, pyproject.toml's extras: a CLI flag that needs one that is not
installed fails at once with one line naming the install command, before TensorFlow loads or
anything slow starts. The packages are looked up (`importlib.util.find_spec`), not imported.
"""

import importlib.util

from textgen.errors import UsageError

EDGE_INSTALL = "pip install 'textgen-captioning[edge]'"
# What each edge format needs (import name: distribution name): the converter, and the runtime
# that runs the converted file once before it is kept (textgen.edge.verify). TensorFlow's own
# converter writes the .tflite; ai-edge-litert runs it.
EDGE_PACKAGES = {
    "tflite": {"ai_edge_litert": "ai-edge-litert"},
    "onnx": {"tf2onnx": "tf2onnx", "onnx": "onnx", "onnxruntime": "onnxruntime"},
}


def missing(modules):
    """The distribution names of the `modules` ({import name: distribution}) not installed."""
    return [name for module, name in modules.items() if importlib.util.find_spec(module) is None]


def require_edge(tflite=False, onnx=False):
    """UsageError naming the install command when a package that `tflite` or `onnx` (the
    export flags) needs is missing."""
    for flag, wanted in (("tflite", tflite), ("onnx", onnx)):
        absent = missing(EDGE_PACKAGES[flag]) if wanted else []
        if absent:
            verb = "is" if len(absent) == 1 else "are"
            raise UsageError(
                f"`{flag}` needs {', '.join(absent)}, which {verb} not installed: {EDGE_INSTALL}"
            )
