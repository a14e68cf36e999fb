"""Every converted file is run once before the export is kept: a converter that silently
computes something else (a dropped op, a wrong gate order) fails the export instead of an app.

The check runs the file in its runtime (LiteRT, onnxruntime) on example inputs and compares
each output with what the TensorFlow function returns for them. The runtimes' kernels round
differently from TensorFlow's, so the tolerance is relative to the outputs' scale: a thousandth,
far above rounding (about 1e-6 here) and far below any real mistake.
"""

import os

import numpy as np

from textgen.errors import UsageError

RELATIVE_TOLERANCE = 1e-3


def check_outputs(path, outputs, expected):
    """UsageError naming `path` unless `outputs` (by name) has every output of `expected` with
    its shape and values (within RELATIVE_TOLERANCE of the largest magnitude)."""
    name_of_file = os.path.basename(path)
    for name, want in expected.items():
        if name not in outputs:
            raise UsageError(
                f"the converted {name_of_file} has no output {name} (it has "
                f"{', '.join(sorted(outputs))}); the export was not written"
            )
        got = np.asarray(outputs[name])
        if got.shape != want.shape:
            raise UsageError(
                f"the converted {name_of_file} gives {name} of shape {list(got.shape)}, not "
                f"{list(want.shape)}; the export was not written"
            )
        scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
        difference = float(np.max(np.abs(got - want))) if want.size else 0.0
        if not difference <= RELATIVE_TOLERANCE * scale:  # a NaN fails too
            raise UsageError(
                f"the converted {name_of_file} computes another {name} than the model (largest "
                f"difference {difference:.3g} at a scale of {scale:.3g}); the export was not "
                "written"
            )


def conversion_failed(runtime, flag, what, error):
    """The UsageError of a conversion to `runtime` that raised `error`: its first line, and
    what still works (exporting without the `flag` that asked for it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = lines[0][:300] if lines else type(error).__name__
    return UsageError(
        f"converting {what} to {runtime} failed ({type(error).__name__}: {detail}); nothing was "
        f"written; export without `{flag}` for the rest"
    )
