"""ServedModel: one SavedModel behind the server, read through its signatures only.

The server knows a model by what `tf.saved_model.load` gives: its signatures, their inputs and
outputs, and the settings it carries (`config_json`, a variable on text models and the output of
a `config` signature on captioners). So it serves textgen's and captioning's exports, and any
other SavedModel, without importing captioning. A text model is one with a `generate`
signature, a captioner one with `caption`; the web page shows a panel for each kind.

A training run directory is exported on the fly into a temporary folder: a text run in this
process, a captioning run by `python -m captioning.export` in a child process (textgen never
imports captioning).
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from textgen.errors import UsageError
from textgen.serving.tensor_json import NUMPY_TYPES, RequestError

DTYPE_NAMES = {
    "string": "DT_STRING",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "bool": "DT_BOOL",
    "uint8": "DT_UINT8",
}
# Inputs that set how much a call generates; --max-length bounds them.
LENGTH_INPUTS = ("length", "max_length")


def spec_of(tensor_spec):
    shape = None if tensor_spec.shape.rank is None else tensor_spec.shape.as_list()
    return {"dtype": tensor_spec.dtype.name, "shape": shape or []}


class ServedModel:
    """A loaded SavedModel with its signatures described for the REST API.

    Args:
        path: a SavedModel folder or a training run directory (exported on the fly).
        name: the name in URLs (/v1/models/NAME).
    """

    def __init__(self, path, name):
        import tensorflow as tf

        self.name = name
        self.path = path
        self.saved_model_path = saved_model_folder(path)
        try:
            self.loaded = tf.saved_model.load(self.saved_model_path)
        except (OSError, ValueError, tf.errors.OpError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise UsageError(f"{path}: not a loadable SavedModel ({first})") from None
        self.signatures = dict(self.loaded.signatures)
        self.inputs, self.outputs = {}, {}
        for signature, function in self.signatures.items():
            specs = function.structured_input_signature[1]
            self.inputs[signature] = {name: spec_of(spec) for name, spec in sorted(specs.items())}
            self.outputs[signature] = {
                name: spec_of(spec) for name, spec in function.structured_outputs.items()
            }
        self.config = read_config(self.loaded, self.signatures)
        self.defaults = self.config.get("serving_defaults", {})
        if "generate" in self.signatures:
            self.kind = "text"
        elif "caption" in self.signatures:
            self.kind = "captioner"
        else:
            self.kind = "other"
        self.vocabulary = None
        if self.kind == "text" and hasattr(self.loaded, "vocabulary"):
            self.vocabulary = {t.decode() for t in self.loaded.vocabulary.numpy()}

    # ---- what the REST API shows ----

    def status(self):
        """GetModelStatusResponse, as TF Serving writes it in JSON."""
        return {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(self):
        """GetModelMetadataResponse: the signature defs in TF Serving's JSON."""

        def tensor(name, spec, prefix):
            dims = [
                {"size": str(-1 if size is None else size), "name": ""} for size in spec["shape"]
            ]
            return {
                "dtype": DTYPE_NAMES.get(spec["dtype"], spec["dtype"].upper()),
                "tensor_shape": {"dim": dims, "unknown_rank": False},
                "name": f"{prefix}_{name}:0",
            }

        signature_def = {
            signature: {
                "inputs": {n: tensor(n, s, signature) for n, s in self.inputs[signature].items()},
                "outputs": {
                    n: tensor(n, s, "StatefulPartitionedCall")
                    for n, s in self.outputs[signature].items()
                },
                "method_name": "tensorflow/serving/predict",
                "defaults": {n: v for n, v in self.defaults.items() if n in self.inputs[signature]},
            }
            for signature in self.signatures
        }
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": "1"},
            "metadata": {"signature_def": {"signature_def": signature_def}},
        }

    def describe(self):
        """What the web page needs: name, kind, signatures, labels and defaults."""
        labels = []
        if "labels" in self.signatures:
            labels = [t.decode() for t in self.signatures["labels"]()["labels"].numpy()]
        return {
            "name": self.name,
            "kind": self.kind,
            "signatures": sorted(self.signatures),
            "labels": labels,
            "defaults": self.defaults,
            "streams": "stream_block" in self.signatures,
        }

    # ---- calling it ----

    def signature(self, name):
        name = name or "serving_default"
        if name not in self.signatures:
            known = ", ".join(sorted(self.signatures))
            raise RequestError(
                f"model {self.name} has no signature {name!r}; it has {known}", status=404
            )
        return name

    def batched_inputs(self, signature):
        """The inputs with a row dimension, which batching concatenates."""
        return [
            n for n, s in self.inputs[signature].items() if s["shape"] and s["shape"][0] is None
        ]

    def batched_outputs(self, signature):
        return {
            n for n, s in self.outputs[signature].items() if s["shape"] and s["shape"][0] is None
        }

    def merge_key(self, signature, inputs):
        """Requests with equal keys can be merged into one call: the same signature and the same
        scalar inputs but `seed` (a merged call draws with its first request's seed: only
        requests that did not choose theirs are merged); for `generate`, prompts of the same
        length (the signature primes them as one [B, T] batch)."""
        scalars = tuple(
            (n, inputs[n].tobytes())
            for n, s in self.inputs[signature].items()
            if not s["shape"] and n != "seed"
        )
        key = (signature, scalars)
        if self.kind == "text" and "prompt" in inputs:
            key += (self.prompt_lengths(inputs["prompt"]),)
        return key

    def prompt_lengths(self, prompts):
        if self.vocabulary is None or self.config.get("level") != "char":
            return tuple(bytes(p) for p in prompts)  # word level: only equal prompts merge
        lengths = {sum(c in self.vocabulary for c in p.decode("utf-8", "replace")) for p in prompts}
        return tuple(sorted(lengths))

    def call(self, signature, inputs):
        """Runs one signature on numpy inputs; returns numpy outputs. A TensorFlow argument
        error (a bad image, an unknown label, prompts of different lengths) is a RequestError."""
        import tensorflow as tf

        tensors = {}
        for name, value in inputs.items():
            dtype = self.inputs[signature][name]["dtype"]
            tensors[name] = tf.constant(value, dtype=tf.string if dtype == "string" else dtype)
        try:
            result = self.signatures[signature](**tensors)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as error:
            raise RequestError(argument_error(error)) from None
        return {name: value.numpy() for name, value in result.items()}

    def warm_up(self, max_batch):
        """Compiles a text model's generation loop for every batch size batching can make (the
        powers of two up to `max_batch`), with the sampler of temperature > 0, so that no request
        waits for XLA. Other models need no warm-up (their graphs are not compiled per size)."""
        if self.kind != "text":
            return 0
        sizes = [1 << k for k in range(max(1, max_batch).bit_length()) if 1 << k <= max_batch]
        for rows in sizes:
            inputs = {"prompt": np.array([b""] * rows, dtype=object)}
            scalars = {"length": 2, "temperature": 1.0, "top_k": 0, "seed": 0}
            for name, value in scalars.items():
                spec = self.inputs["generate"][name]
                inputs[name] = np.array(value, dtype=NUMPY_TYPES[spec["dtype"]])
            if "label" in self.inputs["generate"]:
                inputs["label"] = np.array([b""] * rows, dtype=object)
            self.call("generate", inputs)
        return len(sizes)

    def check_lengths(self, inputs, max_length):
        for name in LENGTH_INPUTS:
            if name in inputs and inputs[name].ndim == 0 and int(inputs[name]) > max_length:
                raise RequestError(
                    f"{name} {int(inputs[name])} is above this server's --max-length {max_length}"
                )


def argument_error(error):
    """TensorFlow's message without its graph trace: an assertion's own text, or the op's
    message (a decoder's "Unknown image file format ...")."""
    message = getattr(error, "message", str(error))
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")
    lines = [line for line in lines if not line.startswith(skip)]
    for line in lines:
        if line.startswith("assertion failed: ["):
            return line[len("assertion failed: [") :].split("]")[0]
    return lines[0] if lines else "invalid argument"


def read_config(loaded, signatures):
    """The settings an export carries: a text model's config_json variable, or the output of a
    captioner's `config` signature; {} for other SavedModels."""
    try:
        if hasattr(loaded, "config_json"):
            return json.loads(loaded.config_json.numpy())
        if "config" in signatures and not signatures["config"].structured_input_signature[1]:
            return json.loads(signatures["config"]()["config_json"].numpy())
    except (ValueError, KeyError):
        pass
    return {}


def saved_model_folder(path):
    """`path` if it is a SavedModel; a run directory's fresh export otherwise."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise UsageError(
            f"{path}: neither a SavedModel (no saved_model.pb) nor a training run directory "
            "(no config.json); give an export (`python -m textgen.export`) or a run"
        )
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"{config_path}: cannot read it ({error})") from None
    folder = tempfile.mkdtemp(prefix="textgen-serve-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = os.path.join(folder, "saved_model")
    if "encoder" in config:  # a captioning run: its own exporter, in a child process
        done = subprocess.run(
            [sys.executable, "-m", "captioning.export", path, out],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise UsageError(f"{path}: exporting the captioning run failed: {done.stderr.strip()}")
        return out
    from textgen.generation.saved_model import export_saved_model
    from textgen.network.language_model import LanguageModel

    export_saved_model(LanguageModel.from_run_directory(path), out)
    return out
