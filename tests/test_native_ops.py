"""textgen's C++ LSTM ops (textgen/network/lstm_recurrence.cc, built by textgen.network.native_ops).

They build wherever a C++ compiler is found; the lean LSTM kernel on them computes what the stock
Keras layer and the TensorFlow-op kernel compute (outputs, final states, every gradient),
including with the batch split over threads and with the embedding folded into the first layer;
and a machine where they cannot be built or are switched off falls back with one line.
"""

import os
import stat

import numpy as np
import pytest
import tensorflow as tf

from textgen.corpus.vocabulary import Vocabulary
from textgen.network import fused_kernels, native_ops
from textgen.network.language_model import LanguageModel

TOLERANCE = 2e-5
needs_compiler = pytest.mark.skipif(
    native_ops.compiler() is None, reason="no C++ compiler: the ops cannot be built here"
)


@pytest.fixture
def ops():
    loaded = native_ops.lstm_ops()
    assert loaded is not None, "a compiler is here, so the ops must build (see the note on stderr)"
    return loaded


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """lstm_ops() with an empty cache directory, its memo cleared before and after."""
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    native_ops._build_and_load.cache_clear()
    yield native_ops.lstm_ops
    native_ops._build_and_load.cache_clear()


def layer_weights(features, units, seed):
    rng = np.random.default_rng(seed)
    return [
        tf.constant(rng.normal(scale=scale, size=shape).astype(np.float32))
        for scale, shape in [
            (0.3, (features, 4 * units)),
            (0.3, (units, 4 * units)),
            (0.5, (4 * units,)),
        ]
    ]


def layer_results(layer, x, h0, c0, weights):
    """Outputs, final states and the gradients of a loss using all of them, for inputs, initial
    states and weights."""
    projections = np.random.default_rng(9)
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0, *weights])
        outputs, h, c = layer(x, h0, c0, *weights)
        loss = sum(
            tf.reduce_sum(r * projections.normal(size=r.shape).astype(np.float32))
            for r in (outputs, h, c)
        )
    return [outputs, h, c] + tape.gradient(loss, [x, h0, c0, *weights])


def assert_all_close(results, expected, names):
    assert len(results) == len(expected) == len(names)
    for name, a, b in zip(names, results, expected):
        assert float(tf.reduce_max(tf.abs(b))) > 0, f"{name}: the check needs nonzero values"
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), atol=TOLERANCE, rtol=TOLERANCE, err_msg=name
        )


NAMES = ["outputs", "h_T", "c_T", "d_x", "d_h0", "d_c0", "d_kernel", "d_recurrent_kernel", "d_bias"]


@needs_compiler
@pytest.mark.parametrize("batch", [3, 20])
def test_native_layer_matches_tensorflow_op_kernel(ops, batch):
    """Batch 20 is split into one block of streams per intra-op thread (at least 8 streams
    each) inside the ops; batch 3 runs as one block."""
    steps, features, units = 9, 5, 6
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(steps, batch, features)).astype(np.float32))
    h0, c0 = (
        tf.constant(rng.normal(scale=0.5, size=(batch, units)).astype(np.float32)) for _ in range(2)
    )
    weights = layer_weights(features, units, seed=2)
    native = layer_results(lambda *a: fused_kernels.lstm_layer_native(ops, *a), x, h0, c0, weights)
    graph = tf.function(
        lambda *a: layer_results(
            lambda *b: fused_kernels.lstm_layer_native(ops, *b), *a[:3], list(a[3:])
        )
    )(x, h0, c0, *weights)
    reference = layer_results(fused_kernels.lstm_layer_tf, x, h0, c0, weights)
    assert_all_close(native, reference, NAMES)
    assert_all_close(graph, reference, [f"{name} (tf.function)" for name in NAMES])


@needs_compiler
def test_ops_are_deterministic(ops):
    """The same inputs give bit-identical results (the per-block bias and input-row sums are
    added in block order), so a seeded run repeats its losses exactly."""
    steps, batch, units = 6, 24, 8
    rng = np.random.default_rng(3)
    table = tf.constant(rng.normal(size=(3, 4 * units)).astype(np.float32))
    rows = tf.constant(rng.integers(0, 3, size=(steps, batch)), tf.int32)
    bias = tf.constant(rng.normal(size=(4 * units,)).astype(np.float32))
    h0 = tf.constant(rng.normal(size=(batch, units)).astype(np.float32))
    kernel = tf.constant(rng.normal(scale=0.3, size=(units, 4 * units)).astype(np.float32))

    def run():
        hs, cs, gates = ops.textgen_lstm_forward(table, rows, bias, h0, h0, kernel)
        return [
            hs,
            cs,
            gates,
            *ops.textgen_lstm_backward(
                gates, cs, h0, kernel, hs, h0, h0, table, rows, input_gradient=True
            ),
        ]

    first, second = run(), run()
    assert first[4].shape == (3, 4 * units)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@needs_compiler
def test_bad_shapes_and_rows_are_an_error_not_a_crash(ops):
    inputs, rows, state = tf.zeros([12, 8]), tf.zeros([4, 3], tf.int32), tf.zeros([3, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"recurrent kernel, got"):
        ops.textgen_lstm_forward(inputs, rows, tf.zeros([8]), state, state, tf.zeros([2, 7]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bias \[4H\]"):
        ops.textgen_lstm_forward(inputs, rows, tf.zeros([5]), state, state, tf.zeros([2, 8]))
    bad_rows = tf.tensor_scatter_nd_update(rows, [[2, 1]], [12])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"input row 12 at position 7 is outside \[0, 12\)"
    ):
        ops.textgen_lstm_forward(inputs, bad_rows, tf.zeros([8]), state, state, tf.zeros([2, 8]))


@needs_compiler
@pytest.mark.parametrize("vocabulary_size", [6, 40])
def test_embedding_folded_into_first_layer(ops, vocabulary_size, monkeypatch):
    """LanguageModel on the lean kernels looks the first layer's input projection up in
    embeddings @ kernel when the vocabulary (6) is smaller than the batch's 4 x 5 tokens, and
    embeds first when it is not (40); either way its logits, final states and the gradients of
    every weight and initial state are the stock Keras layers'."""
    vocabulary = Vocabulary([chr(ord("a") + k) for k in range(vocabulary_size)])
    models = [LanguageModel(vocabulary, "lstm", 2, 6, 5, fused=fused) for fused in (True, False)]
    rng = np.random.default_rng(4)
    for model in models:
        model.build()
    for a, b in zip(*(model.weights for model in models)):
        value = rng.normal(scale=0.5, size=a.shape).astype(np.float32)
        a.assign(value)
        b.assign(value)
    token_ids = tf.constant(rng.integers(0, vocabulary_size, size=(4, 5)), tf.int32)
    states = [tf.constant(rng.normal(scale=0.5, size=(4, 6)).astype(np.float32)) for _ in range(4)]
    folded = []
    original = fused_kernels.lstm_layer_on_table
    monkeypatch.setattr(
        fused_kernels, "lstm_layer_on_table", lambda *args: folded.append(1) or original(*args)
    )

    def run(model):
        projections = np.random.default_rng(5)
        with tf.GradientTape() as tape:
            tape.watch(states)
            logits, new_states = model(token_ids, states, training=True)
            loss = sum(
                tf.reduce_sum(r * projections.normal(size=r.shape).astype(np.float32))
                for r in [logits, *new_states]
            )
        gradients = tape.gradient(loss, [*states, *model.trainable_weights])
        return [logits, *new_states] + [tf.convert_to_tensor(g) for g in gradients]

    results, expected = run(models[0]), run(models[1])
    assert len(folded) == (vocabulary_size < 4 * 5)
    names = (
        ["logits"]
        + [f"state {k}" for k in range(4)]
        + [f"d initial state {k}" for k in range(4)]
        + [f"d {w.path}" for w in models[1].trainable_weights]
    )
    assert_all_close(results, expected, names)


# About 40 s: a full compile of the ops. Every suite run on a machine without a build in its
# cache builds them anyway, through the same path, on the first LSTM training.
@pytest.mark.slow
@pytest.mark.integration  # the compiler
@needs_compiler
def test_first_use_builds_into_the_cache_once(fresh_loader, tmp_path, capsys):
    assert fresh_loader() is not None
    built = native_ops.library_path()
    assert built.is_file() and tmp_path / "cache" in built.parents
    assert "building the C++ LSTM kernel" in capsys.readouterr().err
    assert [p.name for p in built.parent.iterdir()] == [built.name], "no partial files left"
    native_ops._build_and_load.cache_clear()
    assert fresh_loader() is not None
    assert capsys.readouterr().err == "", "the second load reuses the build"


def test_switched_off(fresh_loader, monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGEN_NATIVE_OPS", "0")
    assert fresh_loader() is None
    assert not (tmp_path / "cache").exists()


def test_no_compiler_falls_back_with_one_line(fresh_loader, monkeypatch, capsys):
    monkeypatch.setenv("CXX", "no-such-compiler-textgen")
    assert fresh_loader() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no C++ compiler (no-such-compiler-textgen)" in err
    assert "install g++" in err


@pytest.mark.integration  # the fake compiler
def test_failed_build_falls_back_and_leaves_nothing(fresh_loader, monkeypatch, tmp_path, capsys):
    compiler = tmp_path / "broken-cxx"
    compiler.write_text("#!/bin/sh\necho 'fatal error: something went wrong' >&2\nexit 1\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CXX", str(compiler))
    assert fresh_loader() is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "building" in err[0]
    assert "could not build the C++ LSTM kernel (fatal error: something went wrong)" in err[1]
    assert "TEXTGEN_NATIVE_OPS=0" in err[1]
    target = native_ops.library_path()
    assert not target.exists() and os.listdir(target.parent) == []


def graph_op_types(function, *args):
    return {
        op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()
    }


def test_lstm_layer_picks_the_ops_when_they_load():
    """lstm_layer runs on the C++ ops when they load, and on TensorFlow ops only when they do not
    (then its graph holds no textgen op)."""
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(5, 3, 4)).astype(np.float32))
    h0 = c0 = tf.zeros([3, 6])
    weights = layer_weights(4, 6, seed=7)
    if native_ops.compiler() is not None:
        assert "TextgenLstmForward" in graph_op_types(fused_kernels.lstm_layer, x, h0, c0, *weights)
    with native_ops.disabled():
        types = graph_op_types(fused_kernels.lstm_layer, x, h0, c0, *weights)
    assert "While" in types or "StatelessWhile" in types
    assert not any(t.startswith("Textgen") for t in types)


@needs_compiler
def test_unwritable_cache_falls_back_with_one_line(fresh_loader, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(blocker / "cache"))
    assert fresh_loader() is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "could not build the C++ LSTM kernel" in err[1]
    assert "Error" in err[1], "the reason is named"
