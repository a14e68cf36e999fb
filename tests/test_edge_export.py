"""Edge exports (`--tflite`, `--onnx`: textgen.edge, captioning.inference.edge_export): the
converted files run in ai-edge-litert's interpreter and in onnxruntime, and greedy decoding with
them, done as an app would from model.json alone, gives the SavedModel's text (`generate` at
temperature 0) and captions (`caption` with beam_size 1). A missing package is one line before
anything loads; a failed or wrong conversion leaves no export."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest

from captioning import export as caption_export
from helpers import ROOT, one_error_line, run_main
from test_export import random_model  # a tiny model with weights far from a tie
from textgen import export as text_export
from textgen.corpus.vocabulary import END_OF_DOCUMENT
from textgen.errors import UsageError
from textgen.resources import bundled_model

SHAKESPEARE = bundled_model("shakespeare")
SHAPES = bundled_model("shapes")
SAMPLES = os.path.join(ROOT, "data", "samples")
EDGE_MODULES = ("ai_edge_litert", "tf2onnx", "onnx", "onnxruntime")


def require_edge_packages():
    for module in EDGE_MODULES:
        pytest.importorskip(module)


# ---- what an app does, from model.json and the files alone ----


def read_edge(folder):
    with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
        return json.load(f)


def tflite_runner(path, signature_key):
    """A function of the inputs (numpy arrays by name) -> the outputs, in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner(signature_key)
    return lambda inputs: runner(**inputs)


def onnx_runner(path):
    """A function of the inputs (numpy arrays by name) -> the outputs, in onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(None, inputs)))


def runners(folder, kind):
    """{part: runner} for the files of `kind` (tflite or onnx) that model.json lists."""
    meta = read_edge(folder)
    files = meta["files"][kind]
    if isinstance(files, str):  # the text model: one step
        files = {"step": files}
    if kind == "tflite":
        keys = meta.get("tflite_signatures") or {"step": meta["tflite_signature"]}
        return {
            part: tflite_runner(os.path.join(folder, f), keys[part]) for part, f in files.items()
        }
    return {part: onnx_runner(os.path.join(folder, f)) for part, f in files.items()}


def greedy_text(step, meta, prompt, length, label=None):
    """A char-level model's argmax text of `length` characters, the prompt included, as the
    SavedModel's `generate` at temperature 0 makes it: the prompt (after the default prime, which
    starts an empty prompt and every conditioned text) fed one character at a time from zero
    states, then the argmax of each step's logits fed back."""
    vocabulary = meta["vocabulary"]
    ids = [vocabulary.index(character) for character in prompt]
    labelled = meta["labels"] is not None
    feed = ids if ids and not labelled else [meta["default_prime_id"], *ids]
    extra = {}
    if labelled:
        label_id = meta["labels"].index(label or "<none>")
        extra[meta["label_input"]] = np.array([label_id], np.int32)
    states = {s["name"]: np.zeros([1, s["size"]], np.float32) for s in meta["states"]}

    def run(token):
        nonlocal states
        out = step({"token_ids": np.array([token], np.int32), **states, **extra})
        states = {s["name"]: out[s["output"]] for s in meta["states"]}
        return np.array(out["logits"][0])

    for token in feed:
        logits = run(token)
    new = []
    for _ in range(length - len(ids)):
        logits[meta["never_emit_ids"]] = -np.inf
        new.append(int(np.argmax(logits)))
        logits = run(new[-1])
    return prompt + "".join(vocabulary[i] for i in new)


def greedy_caption(encoder, step, meta, pixels):
    """The greedy caption of uint8 pixels [S, S, 3]: the encoder (its outputs named as the
    step's), then the argmax fed back until <end> or max_length words (after which the
    SavedModel's search can only emit <end>)."""
    out = encoder({"pixels": pixels[None]})
    words = []
    while len(words) < meta["max_length"]:
        logits = np.array(out["logits"][0])
        logits[meta["never_emit_ids"]] = -np.inf
        word = int(np.argmax(logits))
        if word == meta["end_id"]:
            break
        words.append(word)
        states = {s["name"]: out[s["output"]] for s in meta["states"]}
        out = step({"token_ids": np.array([word], np.int32), **states})
    text = " ".join(meta["vocabulary"][w] for w in words)
    return re.sub(r" ([,.;:!?)])", r"\1", text)


# ---- the SavedModel's answers ----


def saved_generate(saved, prompt, length, label=None):
    import tensorflow as tf

    arguments = dict(
        prompt=tf.constant([prompt]),
        length=tf.constant(length),
        temperature=tf.constant(0.0),
        top_k=tf.constant(0),
        seed=tf.constant(0),
    )
    if label is not None:
        arguments["label"] = tf.constant([label])
    return saved.signatures["generate"](**arguments)["text"].numpy()[0].decode("utf-8")


# ---- the bundled text model, through the CLI ----


@pytest.fixture(scope="module")
def shakespeare_export(tmp_path_factory):
    if not SHAKESPEARE.is_dir():
        pytest.skip("no bundled text model here")
    require_edge_packages()
    out = tmp_path_factory.mktemp("edge_text") / "export"
    assert text_export.main([str(SHAKESPEARE), str(out), "--tflite", "--onnx"]) == 0
    return out


def test_text_export_writes_the_edge_folder(shakespeare_export):
    from textgen.network.language_model import LanguageModel

    folder = shakespeare_export / "edge"
    assert sorted(os.listdir(folder)) == ["model.json", "step.onnx", "step.tflite"]
    assert (shakespeare_export / "saved_model.pb").is_file()  # beside the SavedModel
    meta = read_edge(folder)
    model = LanguageModel.from_run_directory(str(SHAKESPEARE))
    assert meta["vocabulary"] == model.vocabulary.tokens
    assert meta["default_prime_id"] == model.vocabulary.id("\n")
    assert [(s["name"], s["layer"], s["kind"], s["size"]) for s in meta["states"]] == [
        ("state_0", 0, "h", 256),
        ("state_1", 0, "c", 256),
        ("state_2", 1, "h", 256),
        ("state_3", 1, "c", 256),
    ]
    assert [t["name"] for t in meta["step"]["inputs"]] == ["token_ids"] + [
        f"state_{i}" for i in range(4)
    ]
    assert [t["name"] for t in meta["step"]["outputs"]] == ["logits"] + [
        f"new_state_{i}" for i in range(4)
    ]
    assert meta["labels"] is None and meta["never_emit_ids"] == []


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_greedy_text_equals_saved_model_generate(shakespeare_export, kind):
    import tensorflow as tf

    saved = tf.saved_model.load(str(shakespeare_export))
    folder = shakespeare_export / "edge"
    step, meta = runners(folder, kind)["step"], read_edge(folder)
    for prompt, length in (("ROMEO:", 160), ("", 80)):
        expected = saved_generate(saved, prompt, length)
        assert greedy_text(step, meta, prompt, length) == expected, (kind, prompt)


def test_edge_step_equals_the_saved_model_step(shakespeare_export):
    import tensorflow as tf

    step = tf.saved_model.load(str(shakespeare_export)).signatures["step"]
    rng = np.random.default_rng(3)
    inputs = {"token_ids": np.array([0, 5, 64], np.int32)}
    inputs.update({f"state_{i}": rng.normal(0, 0.5, (3, 256)).astype(np.float32) for i in range(4)})
    expected = step(**{name: tf.constant(value) for name, value in inputs.items()})
    for kind in ("tflite", "onnx"):
        out = runners(shakespeare_export / "edge", kind)["step"](inputs)
        np.testing.assert_allclose(out["logits"], expected["logits"], atol=1e-4)
        for i in range(4):
            np.testing.assert_allclose(out[f"new_state_{i}"], expected[f"state_{i}"], atol=1e-5)


# ---- models built in code: a conditioned one, every cell ----


def export_with_edge(model, out, tflite=True, onnx=True, overwrite=False):
    from textgen.edge.language_model import edge_writer
    from textgen.generation.saved_model import export_saved_model

    also = edge_writer(model, tflite, onnx)
    return export_saved_model(model, str(out), overwrite, also=also)


LABELS = ["<none>", "happy", "sad"]


@pytest.fixture(
    scope="module",
    # A label is one more int32 input on the same step; `make test-slow` checks both injections
    # (the default suite's exports of the bundled models take the same code path).
    params=[
        pytest.param("every-step", marks=pytest.mark.slow),
        pytest.param("document-start", marks=pytest.mark.slow),
    ],
)
def labelled_export(request, tmp_path_factory):
    require_edge_packages()
    vocabulary = list("\n abcdefgh") + [END_OF_DOCUMENT]
    model = random_model("lstm", vocabulary, labels=LABELS, label_injection=request.param)
    return export_with_edge(model, tmp_path_factory.mktemp("edge_labelled") / "export")


def test_a_conditioned_model_takes_label_ids(labelled_export):
    import tensorflow as tf

    saved = tf.saved_model.load(labelled_export)
    folder = os.path.join(labelled_export, "edge")
    meta = read_edge(folder)
    assert meta["labels"] == LABELS and meta["label_input"] == "label_id"
    assert meta["default_prime_id"] == meta["vocabulary"].index(END_OF_DOCUMENT)
    assert meta["step"]["inputs"][-1] == {"name": "label_id", "dtype": "int32", "shape": ["batch"]}
    for kind in ("tflite", "onnx"):
        step = runners(folder, kind)["step"]
        for label, prompt in (("happy", "ab"), ("sad", ""), (None, "ha")):
            expected = saved_generate(saved, prompt, 40, label or "")
            assert greedy_text(step, meta, prompt, 40, label) == expected, (kind, label)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_every_cell_converts(cell, tmp_path):
    import tensorflow as tf

    require_edge_packages()
    model = random_model(cell, list("\n abcdefghijklmnopqrs"))
    out = export_with_edge(model, tmp_path / "export")
    meta = read_edge(os.path.join(out, "edge"))
    assert [s["kind"] for s in meta["states"]] == ["h", "h"]
    saved = tf.saved_model.load(out)
    for kind in ("tflite", "onnx"):
        step = runners(os.path.join(out, "edge"), kind)["step"]
        assert greedy_text(step, meta, "abc", 60) == saved_generate(saved, "abc", 60)


# ---- failures leave nothing ----


def tiny_model():
    return random_model("rnn", list("\nab"))


def test_a_failed_conversion_leaves_no_export(tmp_path, monkeypatch):
    pytest.importorskip("tf2onnx")
    import tf2onnx

    def fail(*args, **kwargs):
        raise ValueError("an op tf2onnx cannot convert")

    monkeypatch.setattr(tf2onnx.convert, "from_function", fail)
    with pytest.raises(UsageError, match="converting the step to ONNX failed .*cannot convert"):
        export_with_edge(tiny_model(), tmp_path / "out", tflite=False)
    assert os.listdir(tmp_path) == []  # no OUT_DIR, no temporary directory


def test_a_conversion_that_computes_otherwise_fails_and_keeps_the_old_export(tmp_path, monkeypatch):
    require_edge_packages()
    from textgen.edge import tflite_export

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old export")
    run = tflite_export.run_tflite

    def off_by_one(path, key, inputs):
        return {name: value + 1 for name, value in run(path, key, inputs).items()}

    monkeypatch.setattr(tflite_export, "run_tflite", off_by_one)
    with pytest.raises(UsageError, match="step.tflite computes another logits"):
        export_with_edge(tiny_model(), out, onnx=False, overwrite=True)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["old.txt"]


def without(monkeypatch, *modules):
    """importlib.util.find_spec as if `modules` were not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in modules else find_spec(name, *args),
    )


def test_a_missing_package_is_one_line_before_anything_loads(tmp_path, monkeypatch, capsys):
    without(monkeypatch, "ai_edge_litert", "onnxruntime")
    # The run directory does not exist: the line comes before it is read.
    nowhere, out = tmp_path / "nowhere", tmp_path / "out"
    status, _, err = run_main(text_export.main, capsys, nowhere, out, "--tflite")
    one_error_line(
        status, err, "--tflite needs ai-edge-litert", "pip install 'textgen-captioning[edge]'"
    )
    status, _, err = run_main(caption_export.main, capsys, nowhere, out, "--onnx")
    one_error_line(status, err, "--onnx needs onnxruntime, which is not installed: pip install")
    assert os.listdir(tmp_path) == []


# ---- the bundled captioner, through the CLI ----


@pytest.fixture(scope="module")
def shapes_export(tmp_path_factory):
    if not SHAPES.is_dir():
        pytest.skip("no bundled model here")
    require_edge_packages()
    out = tmp_path_factory.mktemp("edge_captions") / "export"
    assert caption_export.main([str(SHAPES), str(out), "--tflite", "--onnx"]) == 0
    return out


def test_caption_export_writes_the_edge_folder(shapes_export):
    folder = shapes_export / "edge"
    assert sorted(os.listdir(folder)) == [
        "encoder.onnx",
        "encoder.tflite",
        "model.json",
        "step.onnx",
        "step.tflite",
    ]
    meta = read_edge(folder)
    vocabulary = meta["vocabulary"]
    assert vocabulary[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert (meta["pad_id"], meta["start_id"], meta["end_id"], meta["unknown_id"]) == (0, 1, 2, 3)
    assert meta["never_emit_ids"] == [0, 1, 3] and meta["image_size"] == 64
    assert meta["encoder"]["inputs"] == [
        {"name": "pixels", "dtype": "uint8", "shape": ["batch", 64, 64, 3]}
    ]
    assert [t["name"] for t in meta["encoder"]["outputs"]] == [
        "logits",
        "new_state_0",
        "new_state_1",
    ]
    assert [t["name"] for t in meta["step"]["inputs"]] == ["token_ids", "state_0", "state_1"]


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_greedy_captions_equal_saved_model_beam_1(shapes_export, kind):
    import tensorflow as tf

    from captioning.datasets.images import load_image

    folder = shapes_export / "edge"
    meta = read_edge(folder)
    parts = runners(folder, kind)
    caption = tf.saved_model.load(str(shapes_export)).signatures["caption"]
    paths = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.endswith(".png"))
    assert len(paths) == 8
    for path in paths:
        with open(path, "rb") as f:
            expected = caption(
                image_bytes=tf.constant([f.read()]),
                beam_size=tf.constant(1),
                max_length=tf.constant(meta["max_length"]),
            )["caption"].numpy()[0]
        pixels = load_image(path, meta["image_size"])
        got = greedy_caption(parts["encoder"], parts["step"], meta, pixels)
        assert got == expected.decode("utf-8"), (kind, path)
