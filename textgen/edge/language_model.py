"""The text model's edge folder, OUT_DIR/edge/ of `python -m textgen.export --tflite --onnx`:

    step.tflite   the step (`step_module`) for LiteRT, one signature named "step"
    step.onnx     the same step for ONNX runtimes
    model.json    what an app needs to decode without this project: the vocabulary (token i is
                  id i), the inputs, outputs and states, the default prime and end-of-document
                  ids, the ids never to emit, the label names of a conditioned model

Greedy decoding as the SavedModel's `generate` at temperature 0 does it: zero states; feed the
default prime (a newline, or the end-of-document token for a conditioned model) unless there
is a prompt, else (a conditioned model: after it) the prompt's ids one at a time, keeping the
states; then take the argmax of the last logits (the never-emit ids masked), feed it, repeat.
docs/textgen.md#edge-exports has it in Python.
"""

import json
import os

from textgen.corpus.vocabulary import END_OF_DOCUMENT
from textgen.edge import EDGE_DIRECTORY
from textgen.edge.onnx_export import ONNX_OPSET, export_onnx
from textgen.edge.step_module import LABEL_INPUT, StepModule
from textgen.edge.tflite_export import export_tflite

FORMAT = "textgen-edge-1"
MODEL_JSON = "model.json"
SIGNATURE = "step"  # the .tflite's signature key


def write_edge_folder(model, directory, tflite=True, onnx=True):
    """Writes the edge folder of `model` (a LanguageModel) into `directory`, which it creates.
    Each converted file is run once and must compute what the model's step computes
    (`textgen.edge.verify`), else UsageError. Returns the names of the files written."""
    os.makedirs(directory)
    module = StepModule.from_language_model(model)
    inputs = module.example_inputs()
    expected = module.reference_outputs(inputs)
    files = {}
    if tflite:
        files["tflite"] = "step.tflite"
        path = os.path.join(directory, files["tflite"])
        export_tflite(module, module.step, SIGNATURE, path, inputs, expected)
    if onnx:
        files["onnx"] = "step.onnx"
        export_onnx(
            module.step, os.path.join(directory, files["onnx"]), "the step", inputs, expected
        )
    description = model_description(model, module, files)
    with open(os.path.join(directory, MODEL_JSON), "w", encoding="utf-8") as f:
        json.dump(description, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return [*files.values(), MODEL_JSON]


def edge_writer(model, tflite, onnx):
    """For `export_saved_model`'s `also`: a function of the export's temporary folder that
    writes the edge folder into it (so that it is part of the one atomic write), or None when
    neither format is asked for."""
    if not (tflite or onnx):
        return None
    return lambda path: write_edge_folder(model, os.path.join(path, EDGE_DIRECTORY), tflite, onnx)


def model_description(model, module, files):
    """model.json's dict."""
    vocabulary = model.vocabulary
    unknown = model.unknown_token
    labelled = bool(model.labels)
    described = module.describe()
    return {
        "format": FORMAT,
        "files": files,
        "tflite_signature": SIGNATURE if "tflite" in files else None,
        "onnx_opset": ONNX_OPSET if "onnx" in files else None,
        "step": {key: described[key] for key in ("inputs", "outputs")},
        "states": described["states"],
        "cell": model.cell,
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "vocabulary_size": len(vocabulary),
        "level": model.level,
        "segmenter": model.segmenter,
        "vocabulary": list(vocabulary.tokens),
        "unknown_id": None if unknown is None else vocabulary.id(unknown),
        "default_prime": model.default_prime(),
        "default_prime_id": vocabulary.id(model.default_prime()),
        "end_of_document_id": vocabulary.index.get(END_OF_DOCUMENT),
        "never_emit_ids": [int(i) for i, never in enumerate(model.forbidden_tokens()) if never],
        "labels": model.labels,
        "label_input": LABEL_INPUT if labelled else None,
        "label_injection": model.label_injection if labelled else None,
        "decoding": (
            "Zero states start a text. Feed default_prime_id unless a prompt is given (a "
            "conditioned model: always, with label_id, the index of its label in labels, 0 for "
            "<none>, at every step), then the prompt's token ids one at a time, each step's "
            "new_state_i becoming the next step's state_i; then repeatedly take the argmax of "
            "the logits (or sample them) with never_emit_ids excluded, and feed it. Characters "
            "(level char) or tokens (level word) map to ids by their index in vocabulary."
        ),
    }
