"""File sizes and single-step latency of the edge exports against the SavedModel.

    python bench/edge_exports.py [--calls 300] [--keep DIR]

Both bundled models (data/models/shakespeare, a 2 x 256 LSTM over 65 characters; data/models/
shapes, the 1 x 256 LSTM captioner with its small CNN) are exported as `python -m textgen.export
... --tflite --onnx` and `python -m captioning.export ... --tflite --onnx` write them, into a
temporary folder. Then, at batch 1, the median (and 90th percentile) over `--calls` calls after
20 warm-up calls of:

- the text model's step: the SavedModel's `step` signature (`tf.saved_model.load`); step.tflite
  in ai-edge-litert, through its signature runner (what Python apps call) and through
  set_tensor / invoke / get_tensor on the interpreter (closer to what a phone's C or Java API
  costs); step.onnx in onnxruntime (`InferenceSession.run`);
- the captioner's encoder and step: the SavedModel has no step signature (its `caption` runs the
  whole search), so TensorFlow's figure is the converted tf.function itself, called eagerly;
- one whole greedy caption of a bundled sample scene: the SavedModel's `caption` at beam 1
  against the encoder and step run from Python in each runtime.

Every runtime keeps its default threads (TensorFlow and onnxruntime: one per core; LiteRT: its
runtime's default, one thread on this host, with XNNPACK), and onnxruntime is timed at one
thread too, LiteRT's footing. The machine may be shared: run it when `pgrep -f "pytest|bench/"`
shows nothing else.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The SavedModel's generation loop is not timed here: take XLA unmeasured (loop_choice).
os.environ.setdefault("TEXTGEN_GENERATION", "xla")

import numpy as np  # noqa: E402
from host import describe_host  # noqa: E402  (bench/host.py, beside this script)

from textgen._quiet_import import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

from captioning.datasets.images import load_image  # noqa: E402
from captioning.inference import edge_export as caption_edge  # noqa: E402
from captioning.inference import saved_model as caption_saved_model  # noqa: E402
from captioning.inference.edge_export import ENCODER, STEP  # noqa: E402
from captioning.models.captioner import Captioner  # noqa: E402
from textgen.edge.language_model import edge_writer  # noqa: E402
from textgen.edge.step_module import StepModule  # noqa: E402
from textgen.edge.tflite_export import captured_stderr  # noqa: E402
from textgen.generation.saved_model import export_saved_model  # noqa: E402
from textgen.network.language_model import LanguageModel  # noqa: E402
from textgen.network.lean_language_model import lean_weights  # noqa: E402
from textgen.resources import bundled_model, data_path  # noqa: E402

WARM_UP = 20
SAMPLE = data_path("samples", "val_000003.png")


def timed(call, calls):
    """(median, 90th percentile) seconds of `calls` calls of `call`, after WARM_UP."""
    for _ in range(WARM_UP):
        call()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    return statistics.median(seconds), seconds[int(0.9 * (len(seconds) - 1))]


def folder_size(path, skip=()):
    total = 0
    for folder, folders, names in os.walk(path):
        folders[:] = [f for f in folders if f not in skip]
        total += sum(os.path.getsize(os.path.join(folder, name)) for name in names)
    return total


def megabytes(count):
    return f"{count / 1e6:.2f} MB"


def litert_runner(path, key):
    """A function of an input dict -> output dict: the .tflite's signature runner."""
    from ai_edge_litert.interpreter import Interpreter

    with captured_stderr():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
        runner = Interpreter(model_path=path).get_signature_runner(key)
    return lambda inputs: runner(**inputs)


def litert_invoke(path, key, inputs):
    """A function that runs the .tflite at `path` on `inputs` through set_tensor / invoke /
    get_tensor, the tensors resized and allocated once."""
    from ai_edge_litert.interpreter import Interpreter

    with captured_stderr():
        interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner(key)
    runner(**inputs)  # resizes the inputs to batch 1 and allocates
    input_details, output_details = runner.get_input_details(), runner.get_output_details()
    indices = [(input_details[name]["index"], value) for name, value in inputs.items()]
    outputs = [detail["index"] for detail in output_details.values()]

    def run():
        for index, value in indices:
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in outputs]

    return run


def onnx_runner(path, threads=0):
    """A function of an input dict -> output dict, in onnxruntime (`threads` 0: its default,
    one intra-op thread per core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(None, inputs)))


def report(title, calls, figures):
    """Times each (name, function) of `figures` and prints its line under `title`."""
    print(f"  {title}, batch 1: median over {calls} calls")
    for name, call in figures:
        median, p90 = timed(call, calls)
        print(f"    {name:<44} {median * 1e6:9.0f} us   (p90 {p90 * 1e6:.0f} us)")


def print_sizes(out, edge_files):
    print(
        f"  {'SavedModel (saved_model.pb, variables/)':<46} {megabytes(folder_size(out, {'edge'}))}"
    )
    for name in edge_files:
        size = os.path.getsize(os.path.join(out, "edge", name))
        print(f"  {'edge/' + name:<46} {megabytes(size)}")


def runtimes(edge, key, inputs):
    """The edge runtimes' (name, function) figures for the part `key` on `inputs`."""
    tflite, onnx = (os.path.join(edge, f"{key}.{suffix}") for suffix in ("tflite", "onnx"))
    runner, ort, ort_1 = litert_runner(tflite, key), onnx_runner(onnx), onnx_runner(onnx, 1)
    return [
        (f"LiteRT signature runner ({key}.tflite)", lambda: runner(inputs)),
        ("LiteRT set_tensor/invoke/get_tensor", litert_invoke(tflite, key, inputs)),
        (f"onnxruntime ({key}.onnx)", lambda: ort(inputs)),
        ("onnxruntime, 1 thread", lambda: ort_1(inputs)),
    ]


def text_model(out, calls):
    model = LanguageModel.from_run_directory(str(bundled_model("shakespeare")))
    export_saved_model(model, out, also=edge_writer(model, True, True))
    print(
        f"text model (data/models/shakespeare: {model.cell} {model.num_layers} x "
        f"{model.hidden_size}, {len(model.vocabulary)} characters)"
    )
    print_sizes(out, ("step.tflite", "step.onnx"))
    inputs = {"token_ids": np.array([7], np.int32)}
    inputs.update({f"state_{i}": np.zeros([1, model.hidden_size], np.float32) for i in range(4)})
    step = tf.saved_model.load(out).signatures["step"]
    tensors = {name: tf.constant(value) for name, value in inputs.items()}
    figures = [("SavedModel `step` signature", lambda: step(**tensors))]
    report("one step", calls, figures + runtimes(os.path.join(out, "edge"), "step", inputs))


def greedy_caption(encode, step, meta, pixels):
    """Greedy decoding from Python with `encode` and `step` (functions of an input dict that
    return an output dict), as docs/captioning.md's example."""
    out, words = encode({"pixels": pixels[None]}), []
    while len(words) < meta["max_length"]:
        logits = np.array(out["logits"][0])
        logits[meta["never_emit_ids"]] = -np.inf
        word = int(np.argmax(logits))
        if word == meta["end_id"]:
            break
        words.append(meta["vocabulary"][word])
        states = {s["name"]: out[s["output"]] for s in meta["states"]}
        out = step({"token_ids": np.array([word], np.int32), **states})
    return " ".join(words)


def captioner(out, calls):
    model = Captioner.from_run_directory(str(bundled_model("shapes")))
    caption_saved_model.export_saved_model(
        model, out, also=caption_edge.edge_writer(model, True, True)
    )
    edge = os.path.join(out, "edge")
    with open(os.path.join(edge, "model.json"), encoding="utf-8") as f:
        meta = json.load(f)
    print(
        f"captioner (data/models/shapes: {model.encoder_name} encoder at {model.image_size} px, "
        f"{model.cell} {model.num_layers} x {model.hidden_size}, {model.vocabulary_size} words)"
    )
    print_sizes(out, ("encoder.tflite", "step.tflite", "encoder.onnx", "step.onnx"))
    pixels = load_image(str(SAMPLE), model.image_size)
    # TensorFlow's figures: the very tf.functions that were converted, called eagerly.
    encoder = caption_edge.encoder_module(model)
    step = StepModule(lean_weights(model), model.cell, model.num_layers, model.hidden_size)
    inputs = {
        "encoder": {"pixels": pixels[None]},
        "step": {
            "token_ids": np.array([5], np.int32),
            **{s["name"]: np.zeros([1, s["size"]], np.float32) for s in meta["states"]},
        },
    }
    pixel_tensor = tf.constant(inputs["encoder"]["pixels"])
    step_tensors = [tf.constant(inputs["step"][spec.name]) for spec in step.step.input_signature]
    tensorflow = {
        "encoder": lambda: encoder.encode(pixel_tensor),
        "step": lambda: step.step(*step_tensors),
    }
    for key in ("encoder", "step"):
        figures = [("TensorFlow (the converted tf.function)", tensorflow[key])]
        report(key, calls, figures + runtimes(edge, key, inputs[key]))

    caption = tf.saved_model.load(out).signatures["caption"]
    with open(SAMPLE, "rb") as f:
        image_bytes = tf.constant([f.read()])
    one, twenty = tf.constant(1), tf.constant(20)
    parts = {
        "LiteRT": [litert_runner(os.path.join(edge, f"{k}.tflite"), k) for k in (ENCODER, STEP)],
        "onnxruntime": [onnx_runner(os.path.join(edge, f"{k}.onnx")) for k in (ENCODER, STEP)],
    }
    captions = {"SavedModel": caption(image_bytes=image_bytes, beam_size=one, max_length=twenty)}
    captions["SavedModel"] = captions["SavedModel"]["caption"].numpy()[0].decode()
    for name, (encode, step_fn) in parts.items():
        captions[name] = greedy_caption(encode, step_fn, meta, pixels)
    print(f"  {os.path.basename(SAMPLE)}: {captions}")
    figures = [
        (
            "SavedModel `caption`, beam_size 1",
            lambda: caption(image_bytes=image_bytes, beam_size=one, max_length=twenty),
        )
    ]
    for name, (encode, step_fn) in parts.items():
        figures.append(
            (
                f"{name}: encoder + steps from Python",
                lambda e=encode, s=step_fn: greedy_caption(e, s, meta, pixels),
            )
        )
    report("one greedy caption", max(calls // 10, 5), figures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=300, help="timed calls per figure (default: 300)"
    )
    parser.add_argument(
        "--keep", metavar="DIR", help="export into DIR and keep it (default: a temporary folder)"
    )
    args = parser.parse_args()
    print(describe_host())
    import ai_edge_litert
    import onnxruntime
    import tf2onnx

    print(
        f"TensorFlow {tf.__version__}, ai-edge-litert {ai_edge_litert.__version__}, "
        f"tf2onnx {tf2onnx.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    base = args.keep or tempfile.mkdtemp(prefix="edge_exports_")
    try:
        text_model(os.path.join(base, "text"), args.calls)
        captioner(os.path.join(base, "captioner"), args.calls)
    finally:
        if not args.keep:
            shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
