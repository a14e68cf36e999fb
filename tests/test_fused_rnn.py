"""The lean CPU kernels (fused=True) compute exactly what the stock Keras layers (fused=False) do.

For each cell: outputs, final states and the gradients with respect to every weight, the inputs
and the initial states agree within 1e-5; and `RecurrentStack.step`, applied step by step,
reproduces the sequence call.
"""

import numpy as np
import pytest
import tensorflow as tf

from textgen.network.recurrent_stack import RecurrentStack

BATCH, TIME, FEATURES, HIDDEN, LAYERS = 3, 7, 5, 4, 2
TOLERANCE = 1e-5


def make_stacks(cell):
    """A fused and a stock stack holding the same (random, non-default) weights."""
    rng = np.random.default_rng(0)
    fused = RecurrentStack(cell, LAYERS, HIDDEN, fused=True, name="fused")
    stock = RecurrentStack(cell, LAYERS, HIDDEN, fused=False, name="stock")
    for stack in (fused, stock):
        stack.build((None, None, FEATURES))
    for a, b in zip(fused.weights, stock.weights):
        value = rng.normal(scale=0.5, size=a.shape).astype(np.float32)
        a.assign(value)
        b.assign(value)
    return fused, stock


def make_inputs(cell):
    rng = np.random.default_rng(1)
    inputs = tf.constant(rng.normal(size=(BATCH, TIME, FEATURES)).astype(np.float32))
    per_layer = 2 if cell == "lstm" else 1
    states = [
        tf.constant(rng.normal(scale=0.5, size=(BATCH, HIDDEN)).astype(np.float32))
        for _ in range(LAYERS * per_layer)
    ]
    return inputs, states


def run_with_gradients(stack, inputs, states):
    """Outputs, final states, and the gradients of a loss that uses all of them."""
    weights = np.random.default_rng(2)
    with tf.GradientTape() as tape:
        tape.watch([inputs, *states])
        outputs, new_states = stack(inputs, states)
        # Random projections, so every output element and state gets a distinct gradient.
        loss = tf.reduce_sum(
            outputs * weights.normal(size=(BATCH, TIME, HIDDEN)).astype(np.float32)
        )
        for s in new_states:
            loss += tf.reduce_sum(s * weights.normal(size=(BATCH, HIDDEN)).astype(np.float32))
    gradients = tape.gradient(loss, [inputs, *states, *stack.trainable_weights])
    return outputs, new_states, [tf.convert_to_tensor(g) for g in gradients]


def assert_close(actual, expected, what):
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), atol=TOLERANCE, rtol=TOLERANCE, err_msg=what
    )


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_fused_matches_stock_keras_layers(cell):
    fused, stock = make_stacks(cell)
    inputs, states = make_inputs(cell)
    outputs, new_states, gradients = run_with_gradients(fused, inputs, states)
    expected_outputs, expected_states, expected_gradients = run_with_gradients(
        stock, inputs, states
    )

    assert outputs.shape == (BATCH, TIME, HIDDEN)
    assert_close(outputs, expected_outputs, "outputs")
    assert len(new_states) == len(expected_states)
    for k, (s, e) in enumerate(zip(new_states, expected_states)):
        assert_close(s, e, f"final state {k}")
    names = (
        ["inputs"]
        + [f"initial state {k}" for k in range(len(states))]
        + [w.path for w in stock.trainable_weights]
    )
    assert len(gradients) == len(expected_gradients) == len(names)
    for name, g, e in zip(names, gradients, expected_gradients):
        assert float(tf.reduce_max(tf.abs(e))) > 0, f"{name}: the check needs a nonzero gradient"
        assert_close(g, e, f"gradient of {name}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_fused_sequence_inside_tf_function(cell):
    """The graph (tf.function) path, used by training, gives the same results as eager."""
    fused, _ = make_stacks(cell)
    inputs, states = make_inputs(cell)
    eager = run_with_gradients(fused, inputs, states)
    graph = tf.function(lambda i, s: run_with_gradients(fused, i, s))(inputs, states)
    for e, g in zip(tf.nest.flatten(eager), tf.nest.flatten(graph)):
        assert_close(g, e, "graph vs eager")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_by_step_equals_sequence(cell):
    fused, stock = make_stacks(cell)
    inputs, states = make_inputs(cell)
    expected_outputs, expected_states = stock(inputs, states)
    step_states = list(states)
    for t in range(TIME):
        top, step_states = fused.step(inputs[:, t], step_states)
        assert_close(top, expected_outputs[:, t], f"step {t} output")
    for k, (s, e) in enumerate(zip(step_states, expected_states)):
        assert_close(s, e, f"final state {k} after stepping")


def test_lstm_sequence_matches_lstm_layer():
    """`lstm_sequence` (input projection in, gates (i, f, o, c)) agrees with `lstm_layer`."""
    from textgen.network import fused_kernels

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(TIME, BATCH, FEATURES)).astype(np.float32))
    h0, c0 = (tf.constant(rng.normal(size=(BATCH, HIDDEN)).astype(np.float32)) for _ in range(2))
    kernel, recurrent, bias = (
        tf.constant(rng.normal(scale=0.5, size=shape).astype(np.float32))
        for shape in [(FEATURES, 4 * HIDDEN), (HIDDEN, 4 * HIDDEN), (4 * HIDDEN,)]
    )
    perm = fused_kernels.lstm_gate_permutation(HIDDEN)
    weights = [
        tf.constant(rng.normal(size=s).astype(np.float32))
        for s in [(TIME, BATCH, HIDDEN), (BATCH, HIDDEN), (BATCH, HIDDEN)]
    ]

    def run(sequence):
        variables = [x, h0, c0, kernel, recurrent, bias]
        with tf.GradientTape() as tape:
            tape.watch(variables)
            if sequence:
                x_proj = tf.einsum("tbf,fg->tbg", x, tf.gather(kernel, perm, axis=1))
                results = fused_kernels.lstm_sequence(
                    x_proj + tf.gather(bias, perm), h0, c0, tf.gather(recurrent, perm, axis=1)
                )
            else:
                results = fused_kernels.lstm_layer(x, h0, c0, kernel, recurrent, bias)
            loss = sum(tf.reduce_sum(r * w) for r, w in zip(results, weights))
        return list(results) + [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]

    for a, b in zip(run(True), run(False)):
        assert_close(a, b, "lstm_sequence vs lstm_layer")
