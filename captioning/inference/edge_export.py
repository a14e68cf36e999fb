"""The captioner's edge folder, OUT_DIR/edge/ of `python -m captioning.export --tflite --onnx`:

    encoder.tflite, encoder.onnx   pixels uint8 [B, S, S, 3] (RGB, S = image_size)
                                   -> logits float32 [B, vocab] of the first word,
                                      new_state_0 ... new_state_{N-1} float32 [B, hidden]
    step.tflite, step.onnx         token_ids int32 [B], state_0 ... state_{N-1}
                                   -> logits float32 [B, vocab], new_state_0 ... new_state_{N-1}
    model.json                     vocabulary, ids of <pad> <start> <end> <unk>, the ids never
                                   to emit, image size, states, inputs and outputs

Two files per format, because the image enters only once: the encoder runs everything the
captioner's own decoding computes before the first word, the CNN (v) and the first recurrent
step, which feeds <start> with v through Wih (`Captioner.start_states`, `Captioner.step`); it
returns that step's logits and states, named as the step names its outputs, so that an app's
loop hands the states on the same way after either. From then on the image channel is zero, so
every later word is a plain language-model step: textgen's `StepModule` on the captioner's lean
weights (embedding and Wxh folded into one table, Wih left out: `lean_weights`). As for the text
model, every recurrent state is an explicit input and output (textgen.edge.step_module says
why).

The encoder takes pixels already at the model's square size: an app has its platform's image
decoder and resizer, and LiteRT has no image decoding. The SavedModel's `caption` resizes with
bicubic interpolation and antialiasing, `python -m captioning.caption` with Pillow's bicubic;
either matches what the model was trained on closely.

Greedy decoding, which equals the SavedModel's `caption` with beam_size 1: run the encoder; then
take the argmax of the logits with the never-emit ids masked, stop at <end> or after max_length
words, else feed the word to the step with the states and repeat. Words are joined by spaces,
with no space before , . ; : ! ? ) (docs/captioning.md#edge-exports has the Python).
"""

import json
import os

import numpy as np

from captioning.datasets.tokens import END, PAD, START, UNKNOWN
from textgen.edge import EDGE_DIRECTORY
from textgen.edge.onnx_export import ONNX_OPSET, export_onnx
from textgen.edge.step_module import StepModule, state_layout, tensor
from textgen.edge.tflite_export import export_tflite
from textgen.network.lean_language_model import lean_weights

FORMAT = "captioning-edge-1"
MODEL_JSON = "model.json"
ENCODER, STEP = "encoder", "step"  # the .tflite files' signature keys, and their file names


def encoder_module(model):
    """A tf.Module with `encode`: pixels -> the first word's logits and the states after it."""
    import tensorflow as tf  # loaded quietly by textgen.edge, imported above

    state_outputs = [f"new_{name}" for name, _, _ in state_layout(model.cell, model.num_layers)]
    size = model.image_size

    def encode(pixels):
        features = model.encode(pixels, training=False)
        start = tf.fill([tf.shape(pixels)[0]], model.start_id)
        logits, states = model.step(start, model.start_states(features))
        # states: [image channel (zero from now on), word count, *recurrent states]
        return {"logits": logits, **dict(zip(state_outputs, states[2:]))}

    module = tf.Module(name="edge_encoder")
    # The Keras variables' tf.Variables, tracked by the module so that saving (on the way to
    # LiteRT) keeps them, as `saved_model.build_module` does.
    module.model_variables = [v.value for v in model.variables]
    module.encode = tf.function(
        encode,
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="pixels")],
        autograph=False,
    )
    module.state_outputs = state_outputs
    return module


def write_edge_folder(model, directory, tflite=True, onnx=True, max_length=20):
    """Writes the edge folder of `model` (a Captioner) into `directory`, which it creates.
    Each converted file is run once and must compute what the model computes
    (`textgen.edge.verify`), else UsageError. `max_length` is the default caption length
    model.json gives. Returns the names of the files written."""
    os.makedirs(directory)
    encoder = encoder_module(model)
    step = StepModule(lean_weights(model), model.cell, model.num_layers, model.hidden_size)
    rng = np.random.default_rng(0)
    size = model.image_size
    pixels = {"pixels": rng.integers(0, 256, (2, size, size, 3)).astype(np.uint8)}
    encoded = {key: value.numpy() for key, value in encoder.encode(pixels["pixels"]).items()}
    step_inputs = step.example_inputs()
    stepped = step.reference_outputs(step_inputs)
    files = {}
    if tflite:
        files["tflite"] = {ENCODER: f"{ENCODER}.tflite", STEP: f"{STEP}.tflite"}
        paths = {key: os.path.join(directory, name) for key, name in files["tflite"].items()}
        export_tflite(encoder, encoder.encode, ENCODER, paths[ENCODER], pixels, encoded)
        export_tflite(step, step.step, STEP, paths[STEP], step_inputs, stepped)
    if onnx:
        files["onnx"] = {ENCODER: f"{ENCODER}.onnx", STEP: f"{STEP}.onnx"}
        paths = {key: os.path.join(directory, name) for key, name in files["onnx"].items()}
        export_onnx(encoder.encode, paths[ENCODER], "the encoder", pixels, encoded)
        export_onnx(step.step, paths[STEP], "the step", step_inputs, stepped)
    description = model_description(model, encoder, step, files, max_length)
    with open(os.path.join(directory, MODEL_JSON), "w", encoding="utf-8") as f:
        json.dump(description, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return [name for kind in files.values() for name in kind.values()] + [MODEL_JSON]


def edge_writer(model, tflite, onnx, max_length=20):
    """For `saved_model.export_saved_model`'s `also`: a function of the export's temporary
    folder that writes the edge folder into it (one atomic write with the SavedModel), or None
    when neither format is asked for."""
    if not (tflite or onnx):
        return None
    return lambda path: write_edge_folder(
        model, os.path.join(path, EDGE_DIRECTORY), tflite, onnx, max_length
    )


def model_description(model, encoder, step, files, max_length):
    """model.json's dict."""
    vocabulary = model.vocabulary
    size, units = model.image_size, model.hidden_size
    described = step.describe()
    never = [int(i) for i, no in enumerate(model.forbidden_tokens().numpy()) if no]
    return {
        "format": FORMAT,
        "files": files,
        "tflite_signatures": {ENCODER: ENCODER, STEP: STEP} if "tflite" in files else None,
        "onnx_opset": ONNX_OPSET if "onnx" in files else None,
        "image_size": size,
        "pixels": "uint8 RGB [batch, image_size, image_size, 3], the image resized to "
        "image_size x image_size (bicubic)",
        "encoder": {
            "inputs": [tensor("pixels", "uint8", ["batch", size, size, 3])],
            "outputs": [tensor("logits", "float32", ["batch", model.vocabulary_size])]
            + [tensor(name, "float32", ["batch", units]) for name in encoder.state_outputs],
        },
        "step": {key: described[key] for key in ("inputs", "outputs")},
        "states": described["states"],
        "cell": model.cell,
        "num_layers": model.num_layers,
        "hidden_size": units,
        "vocabulary_size": model.vocabulary_size,
        "vocabulary": list(vocabulary.tokens),
        **{f"{name}_id": vocabulary.id(token) for name, token in SPECIAL_NAMES.items()},
        "never_emit_ids": never,
        "max_length": max_length,
        "decoding": (
            "Run the encoder on the pixels: logits of the first word and the states. Then "
            "repeatedly take the argmax of the logits with never_emit_ids excluded; stop at "
            "end_id or after max_length words; else feed the word as token_ids to the step "
            "with the states (each new_state_i becomes the next state_i). Words are joined by "
            "spaces, with no space before , . ; : ! ? )"
        ),
    }


SPECIAL_NAMES = {"pad": PAD, "start": START, "end": END, "unknown": UNKNOWN}
