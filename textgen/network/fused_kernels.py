"""Lean CPU kernels for the stock Keras recurrent layers, on the layers' own weights.

Keras runs a recurrent layer on the CPU as a loop that calls its cell once per time step, so every
step pays for a small input matmul, bias adds and the layer machinery. These kernels compute the
same function (same weights, gate order and activations as `keras.layers.LSTM`, `GRU` with
`reset_after=True`, and `SimpleRNN`) with fewer, larger, better-shaped operations:

- LSTM (`lstm_layer`, what `RecurrentStack` runs): one large input-projection matmul for all time
  steps, and the input and weight gradients one large matmul each. The recurrence itself runs on
  textgen's C++ ops where they build (`lstm_layer_native`, `lstm_layer_on_table`; see
  `textgen/network/lstm_recurrence.cc` and `textgen.network.native_ops`), one op for the forward
  loop and one for
  the backward loop. Without them (`lstm_layer_tf`): a `tf.while_loop` with one recurrent matmul
  and a few element-wise ops per step, every
  per-step tensor kept feature-major ([features, batch]) because TensorFlow's CPU matmul runs
  `[4H, H] @ [H, B]` faster than `[B, H] @ [H, 4H]`; and a hand-written backward pass
  (`tf.custom_gradient`): every gate-derivative factor is computed for all steps at once before
  the backward loop, so that loop carries only the recurrent gradient (one matmul and five
  element-wise ops per step), and the input and weight gradients are each one large matmul over
  all time steps, in the fast orientation, as cuDNN does it.
  (TensorFlow's fused `BlockLSTMV2` op has exactly Keras' gate layout (i, f, c, o) and, with
  cell_clip=0 and no peepholes, Keras' semantics, but its per-step Eigen matmul is slower on the
  CPU than the above, its registered gradient uses the ICFO layout of `BlockLSTM`, and
  `BlockLSTMGradV2` does a small weight-gradient matmul every step; so it is not used.)
- `lstm_sequence`: the same backward with a batch-major forward on a precomputed input
  projection, for callers that hold the projection rather than the inputs.
- GRU and SimpleRNN: one large input-projection matmul before the loop, one recurrent matmul and
  a handful of element-wise ops per step, autodiff backward.

Every kernel takes a `precision`: "float32", or "bfloat16" for its matmuls only (operands cast
to bfloat16, products back to float32; gates, states and gradients' sums stay float32; see
`textgen.network.precision`). On the C++ ops that covers the large matmuls outside the op (input
projection, input and weight gradients); the recurrence inside the op stays float32 (Eigen has
no fast bfloat16 product; bench/README.md measures both).

All sequences here are time-major: [time, batch, features]. The measurements behind these choices
are in bench/README.md ("Training throughput", "Findings behind design choices in the code").
"""

import tensorflow as tf

from textgen.network import native_ops
from textgen.network.precision import matmul, operand


def lstm_gate_permutation(units):
    """Keras orders LSTM gates (i, f, c, o); `lstm_sequence` wants the sigmoid gates contiguous
    (i, f, o, c)."""
    return tf.concat(
        [tf.range(0, 2 * units), tf.range(3 * units, 4 * units), tf.range(2 * units, 3 * units)],
        axis=0,
    )


def _lstm_backward(order, i, f, o, g, co, cs, c0, recurrent_kernel, d_hs, d_h, d_c):
    """The recurrent part of the LSTM backward pass.

    Args:
        order: "ifco" (Keras) or "ifoc": the gate order of the returned pre-activation gradient
            and of `recurrent_kernel`'s columns.
        i, f, o, g: [T, B, H] gate activations (g = tanh of the candidate); co = tanh(cs);
            cs: [T, B, H] cell states; c0: [B, H] initial cell state.
        d_hs: [T, B, H] gradient of the outputs; d_h, d_c: [B, H] of the final states.
    Returns:
        (d_z [T, B, 4H] gradient of the gate pre-activations, d_h0, d_c0).
    """
    steps = tf.shape(i)[0]
    # Every factor that does not depend on the incoming gradient, for all steps at once.
    c_prev = tf.concat([c0[None], cs[:-1]], 0)
    d_c_from_h = o * (1 - co * co)  # d c_t / d h_t (through h = o tanh c)
    factors = {
        "i": g * i * (1 - i),
        "f": c_prev * f * (1 - f),
        "c": i * (1 - g * g),
        "o": co * o * (1 - o),
    }
    factors = tf.concat([factors[k] for k in order], -1)  # [T, B, 4H]
    uses_h = {k: k == "o" for k in order}
    kernel_t = tf.transpose(recurrent_kernel)

    def backward(k, d_h_rec, d_c_carry, d_z):
        t = steps - 1 - k
        d_h = d_hs[t] + d_h_rec
        d_c = d_c_carry + d_h * d_c_from_h[t]
        d_zt = tf.concat([d_h if uses_h[gate] else d_c for gate in order], 1) * factors[t]
        return (k + 1, tf.matmul(d_zt, kernel_t), d_c * f[t], d_z.write(t, d_zt))

    _, d_h0, d_c0, d_z = tf.while_loop(
        lambda k, *_: k < steps,
        backward,
        (0, d_h, d_c, tf.TensorArray(i.dtype, size=steps)),
        swap_memory=False,
    )
    return d_z.stack(), d_h0, d_c0


def _none_to_zeros(grad, like):
    return tf.zeros_like(like) if grad is None else grad


def lstm_layer(x, h0, c0, kernel, recurrent_kernel, bias, native=True, precision="float32"):
    """Runs a `keras.layers.LSTM` over a time-major sequence, on its own weights.

    Through textgen's C++ recurrence ops (`lstm_layer_native`) when `native` and they are
    available (`textgen.network.native_ops`), else through TensorFlow ops (`lstm_layer_tf`); both
    compute
    the same.

    Args:
        x: [T, B, F] inputs.
        h0, c0: [B, H] initial states.
        kernel [F, 4H], recurrent_kernel [H, 4H], bias [4H]: the Keras weights, gates (i, f, c, o).
    Returns:
        (outputs [T, B, H], h_T, c_T).
    """
    ops = native_ops.lstm_ops() if native else None
    if ops is not None:
        return lstm_layer_native(ops, x, h0, c0, kernel, recurrent_kernel, bias, precision)
    return lstm_layer_tf(x, h0, c0, kernel, recurrent_kernel, bias, precision)


def _native_recurrence(
    ops,
    inputs,
    input_rows,
    bias,
    h0,
    c0,
    recurrent_kernel,
    input_gradient=False,
    precision="float32",
):
    """The forward recurrence on the C++ op, and its backward pass up to the gate pre-activations.

    Args:
        inputs: [N, 4H] input projections (x @ kernel), Keras gate order (i, f, c, o) ...
        input_rows: [T, B] int32: ... step t of stream b adds row input_rows[t, b] (the op reads
            the row where it needs it, so a table of embedded tokens is never expanded).
        bias: [4H], added inside the op while each step's gates are in cache.
        h0, c0: [B, H]; recurrent_kernel: [H, 4H].
        input_gradient: whether backward should return d_inputs, the gate gradients summed into
            the rows of `inputs` they came from (done inside the op).
    Returns:
        (outputs [T, B, H], c_T, backward), where backward(d_outputs, d_h, d_c) returns
        (d_z [T*B, 4H], row t*B + b for stream b at step t; d_inputs [N, 4H] or [0, 4H];
        d_bias; d_h0; d_c0; d_recurrent_kernel).
    """
    units = tf.shape(h0)[1]
    outputs, cs, gates = ops.textgen_lstm_forward(
        inputs, input_rows, bias, h0, c0, recurrent_kernel
    )

    def backward(d_outputs, d_h, d_c):
        d_z, d_inputs, d_bias, d_h0, d_c0 = ops.textgen_lstm_backward(
            gates,
            cs,
            c0,
            recurrent_kernel,
            _none_to_zeros(d_outputs, outputs),
            _none_to_zeros(d_h, h0),
            _none_to_zeros(d_c, c0),
            inputs,
            input_rows,
            input_gradient=input_gradient,
        )
        d_z = tf.reshape(d_z, [-1, 4 * units])
        prev_h = tf.reshape(tf.concat([h0[None], outputs[:-1]], 0), [-1, units])
        d_recurrent = matmul(prev_h, d_z, precision, transpose_a=True)
        return d_z, d_inputs, d_bias, d_h0, d_c0, d_recurrent

    return outputs, cs[-1], backward


def lstm_layer_native(ops, x, h0, c0, kernel, recurrent_kernel, bias, precision="float32"):
    """`lstm_layer` on the C++ recurrence ops (`native_ops.lstm_ops()`): the input projection, the
    input gradient and the weight gradients are each one large matmul over all time steps, as in
    `lstm_layer_tf`; the step-by-step parts (the forward recurrence, and the backward one up to
    the gate pre-activation gradients) are one op each instead of a `tf.while_loop`."""

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        steps, batch, features = tf.unstack(tf.shape(x))
        flat_x = tf.reshape(x, [-1, features])
        rows = tf.reshape(tf.range(steps * batch, dtype=tf.int32), [steps, batch])
        outputs, c_t, backward = _native_recurrence(
            ops,
            matmul(flat_x, kernel, precision),
            rows,
            bias,
            h0,
            c0,
            recurrent_kernel,
            precision=precision,
        )

        def grad(d_outputs, d_h, d_c):
            d_z, _, d_bias, d_h0, d_c0, d_recurrent = backward(d_outputs, d_h, d_c)
            d_kernel = matmul(flat_x, d_z, precision, transpose_a=True)
            d_x = tf.reshape(matmul(d_z, kernel, precision, transpose_b=True), tf.shape(x))
            return d_x, d_h0, d_c0, d_kernel, d_recurrent, d_bias

        return (outputs, outputs[-1], c_t), grad

    return run(
        x,
        h0,
        c0,
        tf.convert_to_tensor(kernel),
        tf.convert_to_tensor(recurrent_kernel),
        tf.convert_to_tensor(bias),
    )


def lstm_layer_on_table(ops, token_ids, table, bias, h0, c0, recurrent_kernel, precision="float32"):
    """`lstm_layer` on embedded tokens, with the input projection looked up instead of computed.

    When a layer's input is an embedding, x_t @ kernel is row token_t of the table
    embeddings @ kernel. With a vocabulary smaller than the batch, that is V rows of input matmul
    instead of T*B (for a char model, 65 instead of 3,200 per group of streams), and the input
    side of the backward pass is a sum of d_z's rows per token (inside the backward op) instead
    of two more large matmuls. On the C++ recurrence ops only: on TensorFlow ops it does not pay.

    Args:
        ops: `native_ops.lstm_ops()`.
        token_ids: [T, B] int token ids.
        table: [V, 4H] embeddings @ kernel; bias: [4H]. Keras gate order (i, f, c, o).
        h0, c0: [B, H] initial states; recurrent_kernel: [H, 4H].
    Returns:
        (outputs [T, B, H], h_T, c_T); the gradient reaches `table` (and through it the embedding
        and kernel it was computed from).
    """
    token_ids = tf.cast(token_ids, tf.int32)

    @tf.custom_gradient
    def run(table, bias, h0, c0, recurrent_kernel):
        outputs, c_t, backward = _native_recurrence(
            ops,
            table,
            token_ids,
            bias,
            h0,
            c0,
            recurrent_kernel,
            input_gradient=True,
            precision=precision,
        )

        def grad(d_outputs, d_h, d_c):
            _, d_table, d_bias, d_h0, d_c0, d_recurrent = backward(d_outputs, d_h, d_c)
            return d_table, d_bias, d_h0, d_c0, d_recurrent

        return (outputs, outputs[-1], c_t), grad

    return run(
        tf.convert_to_tensor(table),
        tf.convert_to_tensor(bias),
        h0,
        c0,
        tf.convert_to_tensor(recurrent_kernel),
    )


def lstm_layer_tf(x, h0, c0, kernel, recurrent_kernel, bias, precision="float32"):
    """`lstm_layer` on TensorFlow ops only.

    Inside, every per-step tensor is feature-major ([features, batch]): the recurrent matmuls are
    then `[4H, H] @ [H, B]` and `[H, 4H] @ [4H, B]`, shapes TensorFlow's CPU matmul runs faster
    than `[B, H] @ [H, 4H]`, the gate slices are contiguous row blocks, and the weight
    gradients are `[4H, T*B] @ [T*B, F]` matmuls, again the fast orientation. Arguments and
    results as `lstm_layer`.
    """

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        steps, batch, features = tf.unstack(tf.shape(x))
        units = tf.shape(h0)[1]
        flat_x = tf.reshape(x, [-1, features])
        x_proj = tf.reshape(matmul(flat_x, kernel, precision) + bias, [steps, batch, 4 * units])
        x_proj = tf.transpose(x_proj, [0, 2, 1])  # [T, 4H, B]
        recurrent_t = operand(tf.transpose(recurrent_kernel), precision)  # [4H, H]

        def forward(t, h, c, sigs, gs, cs, cos, hs):
            z = x_proj[t] + matmul(recurrent_t, h, precision)  # [4H, B]
            sig = tf.sigmoid(z)  # rows 2H:3H unused
            g = tf.tanh(z[2 * units : 3 * units])
            c = sig[units : 2 * units] * c + sig[:units] * g
            co = tf.tanh(c)
            h = sig[3 * units :] * co
            return (
                t + 1,
                h,
                c,
                sigs.write(t, sig),
                gs.write(t, g),
                cs.write(t, c),
                cos.write(t, co),
                hs.write(t, h),
            )

        arrays = [tf.TensorArray(x.dtype, size=steps) for _ in range(5)]
        _, h_t, c_t, sigs, gs, cs, cos, hs = tf.while_loop(
            lambda t, *_: t < steps,
            forward,
            (0, tf.transpose(h0), tf.transpose(c0), *arrays),
            swap_memory=False,
        )
        sigs, g, cs, co, hs = sigs.stack(), gs.stack(), cs.stack(), cos.stack(), hs.stack()
        outputs = tf.transpose(hs, [0, 2, 1])  # [T, B, H]

        def grad(d_outputs, d_h, d_c):
            d_outputs = _none_to_zeros(d_outputs, outputs)
            d_h, d_c = _none_to_zeros(d_h, h0), _none_to_zeros(d_c, c0)
            d_hs = tf.transpose(d_outputs, [0, 2, 1])  # [T, H, B]
            i, f, o = sigs[:, :units], sigs[:, units : 2 * units], sigs[:, 3 * units :]
            c_prev = tf.concat([tf.transpose(c0)[None], cs[:-1]], 0)
            d_c_from_h = o * (1 - co * co)
            factors = tf.concat(
                [g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), co * o * (1 - o)], 1
            )  # [T, 4H, B]
            recurrent = operand(recurrent_kernel, precision)

            def backward(k, d_h_rec, d_c_carry, d_z):
                t = steps - 1 - k
                d_h = d_hs[t] + d_h_rec
                d_c = d_c_carry + d_h * d_c_from_h[t]
                d_zt = tf.concat([d_c, d_c, d_c, d_h], 0) * factors[t]
                d_h_rec = matmul(recurrent, d_zt, precision)
                return (k + 1, d_h_rec, d_c * f[t], d_z.write(t, d_zt))

            _, d_h0, d_c0, d_z = tf.while_loop(
                lambda k, *_: k < steps,
                backward,
                (0, tf.transpose(d_h), tf.transpose(d_c), tf.TensorArray(x.dtype, size=steps)),
                swap_memory=False,
            )
            d_z = tf.reshape(tf.transpose(d_z.stack(), [1, 0, 2]), [4 * units, -1])  # [4H, T*B]
            prev_h = tf.reshape(tf.concat([h0[None], outputs[:-1]], 0), [-1, units])
            d_kernel = tf.transpose(matmul(d_z, flat_x, precision))
            d_recurrent = tf.transpose(matmul(d_z, prev_h, precision))
            d_bias = tf.reduce_sum(d_z, 1)
            d_x = tf.reshape(tf.transpose(matmul(kernel, d_z, precision)), tf.shape(x))
            return d_x, tf.transpose(d_h0), tf.transpose(d_c0), d_kernel, d_recurrent, d_bias

        return (outputs, tf.transpose(h_t), tf.transpose(c_t)), grad

    return run(
        x,
        h0,
        c0,
        tf.convert_to_tensor(kernel),
        tf.convert_to_tensor(recurrent_kernel),
        tf.convert_to_tensor(bias),
    )


def lstm_sequence(x_proj, h0, c0, recurrent_kernel):
    """Runs an LSTM over a time-major input projection.

    Args:
        x_proj: [T, B, 4H], `x @ kernel + bias` with gates in (i, f, o, c) order.
        h0, c0: [B, H] initial states.
        recurrent_kernel: [H, 4H] in (i, f, o, c) order.
    Returns:
        (outputs [T, B, H], h_T, c_T).
    """

    @tf.custom_gradient
    def run(x_proj, h0, c0, recurrent_kernel):
        steps = tf.shape(x_proj)[0]
        units = tf.shape(h0)[1]

        def forward(t, h, c, acts, cs, cos, hs):
            z = x_proj[t] + tf.matmul(h, recurrent_kernel)
            act = tf.concat([tf.sigmoid(z[:, : 3 * units]), tf.tanh(z[:, 3 * units :])], 1)
            c = act[:, units : 2 * units] * c + act[:, :units] * act[:, 3 * units :]
            co = tf.tanh(c)
            h = act[:, 2 * units : 3 * units] * co
            return t + 1, h, c, acts.write(t, act), cs.write(t, c), cos.write(t, co), hs.write(t, h)

        arrays = [tf.TensorArray(x_proj.dtype, size=steps) for _ in range(4)]
        _, h, c, acts, cs, cos, hs = tf.while_loop(
            lambda t, *_: t < steps, forward, (0, h0, c0, *arrays), swap_memory=False
        )
        acts, cs, cos, hs = acts.stack(), cs.stack(), cos.stack(), hs.stack()

        def grad(d_hs, d_h, d_c):
            d_hs, d_h, d_c = (
                _none_to_zeros(d_hs, hs),
                _none_to_zeros(d_h, h0),
                _none_to_zeros(d_c, c0),
            )
            i, f, o, g = tf.split(acts, 4, axis=-1)
            d_z, d_h0, d_c0 = _lstm_backward(
                "ifoc", i, f, o, g, cos, cs, c0, recurrent_kernel, d_hs, d_h, d_c
            )
            prev_h = tf.concat([h0[None], hs[:-1]], 0)
            d_kernel = tf.matmul(
                tf.reshape(prev_h, [-1, units]), tf.reshape(d_z, [-1, 4 * units]), transpose_a=True
            )
            return d_z, d_h0, d_c0, d_kernel

        return (hs, h, c), grad

    return run(x_proj, h0, c0, recurrent_kernel)


def lstm_step(x_proj, h, c, recurrent_kernel):
    """One LSTM step on [B, 4H] input projection, gates in (i, f, o, c) order."""
    units = tf.shape(h)[1]
    z = x_proj + tf.matmul(h, recurrent_kernel)
    s = tf.sigmoid(z[:, : 3 * units])
    c = s[:, units : 2 * units] * c + s[:, :units] * tf.tanh(z[:, 3 * units :])
    return s[:, 2 * units :] * tf.tanh(c), c


def gru_step(x_proj, h, recurrent_kernel, recurrent_bias, precision="float32"):
    """One step of Keras' GRU (reset_after=True), gates (z, r, h); x_proj includes the input
    bias."""
    units = tf.shape(h)[1]
    inner = matmul(h, recurrent_kernel, precision) + recurrent_bias
    zr = tf.sigmoid(x_proj[:, : 2 * units] + inner[:, : 2 * units])
    candidate = tf.tanh(x_proj[:, 2 * units :] + zr[:, units:] * inner[:, 2 * units :])
    z = zr[:, :units]
    return z * h + (1 - z) * candidate


def simple_rnn_step(x_proj, h, recurrent_kernel, precision="float32"):
    """One step of Keras' SimpleRNN (tanh); x_proj includes the bias."""
    return tf.tanh(x_proj + matmul(h, recurrent_kernel, precision))


def scan_sequence(step, x_proj, h0):
    """Runs a one-state step over a time-major projection; autodiff handles the backward pass."""
    steps = tf.shape(x_proj)[0]

    def body(t, h, hs):
        h = step(x_proj[t], h)
        return t + 1, h, hs.write(t, h)

    _, h, hs = tf.while_loop(
        lambda t, *_: t < steps, body, (0, h0, tf.TensorArray(x_proj.dtype, size=steps))
    )
    return hs.stack(), h
