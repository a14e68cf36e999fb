"""A tf.function as an ONNX model, converted by tf2onnx and checked in onnxruntime.

tf2onnx traces the function's graph (variables frozen into constants) and writes standard ONNX
ops; any ONNX runtime runs the file, onnxruntime here:

    session = onnxruntime.InferenceSession("step.onnx", providers=["CPUExecutionProvider"])
    logits, *new_states = session.run(None, {"token_ids": ..., "state_0": ..., ...})

Inputs and outputs keep the function's names; their first dimension, the batch, is named
`batch` (tf2onnx would call it unk__16), so a runtime's listing says what it is.
"""

import contextlib
import logging

from textgen.edge.verify import check_outputs, conversion_failed

# Opset 17 (ONNX 1.12): what tf2onnx 1.16 and 1.17 write well and every onnxruntime since 1.12
# runs.
ONNX_OPSET = 17


@contextlib.contextmanager
def quiet_tf2onnx():
    """tf2onnx logs its versions, each rewriter and the op counts at INFO on every conversion,
    and TensorFlow warns twice that it cannot serialise `table_initializer` when the process
    holds lookup tables (the SavedModel's, exported just before), which the step does not use;
    a CLI prints one line. Errors still come through, and a failure raises."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def write_onnx(function, path, what, opset=ONNX_OPSET):
    """Converts `function` (a tf.function with an input signature) to the ONNX file `path`;
    `what` names it in an error."""
    import tf2onnx

    with quiet_tf2onnx():
        try:
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=function.input_signature, opset=opset
            )
        except Exception as error:  # tf2onnx raises plain ValueErrors, KeyErrors, ...
            raise conversion_failed("ONNX", "onnx", what, error) from error
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


def run_onnx(path, inputs):
    """The outputs (numpy arrays by name) of the ONNX model at `path` for `inputs`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def export_onnx(function, path, what, inputs, expected):
    """`write_onnx`, then the file run in onnxruntime on `inputs` must give `expected`, or the
    export fails (`verify.check_outputs`)."""
    write_onnx(function, path, what)
    check_outputs(path, run_onnx(path, inputs), expected)
    return path
