"""A tf.Module's function as a LiteRT flatbuffer (.tflite), checked in LiteRT's interpreter.

TensorFlow's converter (`tf.lite.TFLiteConverter`) writes the file; ai-edge-litert, the
TFLite runtime that replaces `tf.lite.Interpreter`, runs it. The file holds one signature,
named `signature_key`, so that an app asks for it by name:

    runner = Interpreter(model_path="step.tflite").get_signature_runner("step")
    outputs = runner(token_ids=..., state_0=..., ...)   # a dict of numpy arrays by name

The batch dimension stays dynamic (the runner resizes the inputs to what it is given). The
weights stay float32: no quantisation, so the text and captions equal the SavedModel's.
"""

import contextlib
import os
import sys
import tempfile

import tensorflow as tf

from textgen.edge.verify import check_outputs, conversion_failed


def write_tflite(module, function, signature_key, path):
    """Converts `function` (a tf.function of `module` with an input signature) to `path`.

    It goes through a SavedModel in a temporary folder beside `path`: the converter names the
    one function it is given `serving_default` (`from_concrete_functions`), while
    `from_saved_model` keeps the signature key the SavedModel was saved with."""
    concrete = function.get_concrete_function()
    with tempfile.TemporaryDirectory(prefix=".tflite-", dir=os.path.dirname(path)) as saved:
        tf.saved_model.save(module, saved, signatures={signature_key: concrete})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[signature_key])
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter's own errors have no common base class
            raise conversion_failed("LiteRT", "tflite", signature_key, error) from error
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def run_tflite(path, signature_key, inputs):
    """The outputs (numpy arrays by name) of the .tflite at `path` for `inputs`."""
    from ai_edge_litert.interpreter import Interpreter

    with captured_stderr():
        runner = Interpreter(model_path=path).get_signature_runner(signature_key)
        return runner(**inputs)


@contextlib.contextmanager
def captured_stderr():
    """LiteRT's C++ runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    straight to file descriptor 2, which no logging setting reaches, and a CLI prints one line:
    fd 2 goes to a temporary file meanwhile, replayed only if the block fails."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): leave it alone
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def export_tflite(module, function, signature_key, path, inputs, expected):
    """`write_tflite`, then the file run in LiteRT on `inputs` must give `expected` (the
    function's own outputs), or the export fails (`verify.check_outputs`)."""
    write_tflite(module, function, signature_key, path)
    check_outputs(path, run_tflite(path, signature_key, inputs), expected)
    return path
