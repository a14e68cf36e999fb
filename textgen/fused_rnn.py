"""Lean CPU kernels for the stock Keras recurrent layers, on the layers' own weights.

Keras runs a recurrent layer on the CPU as a loop that calls its cell once per time step, so every
step pays for a small input matmul, bias adds and the layer machinery. These kernels compute the
same function (same weights, gate order and activations as `keras.layers.LSTM`, `GRU` with
`reset_after=True`, and `SimpleRNN`) with:

- one large input-projection matmul for all time steps, before the loop;
- one recurrent matmul and a handful of fused element-wise ops per step;
- for the LSTM, a hand-written backward pass (`tf.custom_gradient`): the loop only carries the
  recurrent gradient, and the weight gradient is one large matmul over all time steps, as cuDNN
  and oneDNN do it.

All sequences here are time-major: [time, batch, features].
"""

import tensorflow as tf


def lstm_gate_permutation(units):
    """Keras orders LSTM gates (i, f, c, o); the kernel wants the sigmoid gates contiguous (i, f, o, c)."""
    return tf.concat([tf.range(0, 2 * units), tf.range(3 * units, 4 * units),
                      tf.range(2 * units, 3 * units)], axis=0)


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

        def forward(t, h, c, hs, cs, gates):
            z = x_proj[t] + tf.matmul(h, recurrent_kernel)
            s = tf.sigmoid(z[:, : 3 * units])
            g = tf.tanh(z[:, 3 * units:])
            c = s[:, units: 2 * units] * c + s[:, :units] * g
            h = s[:, 2 * units:] * tf.tanh(c)
            return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, tf.concat([s, g], 1))

        arrays = [tf.TensorArray(x_proj.dtype, size=steps) for _ in range(3)]
        _, h, c, hs, cs, gates = tf.while_loop(lambda t, *_: t < steps, forward,
                                               (0, h0, c0, *arrays))
        all_h, all_c, all_gates = hs.stack(), cs.stack(), gates.stack()

        def grad(d_outputs, d_h, d_c):
            d_outputs = tf.zeros_like(all_h) if d_outputs is None else d_outputs
            d_h = tf.zeros_like(h0) if d_h is None else d_h
            d_c = tf.zeros_like(c0) if d_c is None else d_c
            prev_c = tf.concat([c0[None], all_c[:-1]], 0)
            kernel_t = tf.transpose(recurrent_kernel)

            def backward(k, d_h, d_c, d_z):
                t = steps - 1 - k
                s_g = all_gates[t]
                s, g = s_g[:, : 3 * units], s_g[:, 3 * units:]
                tanh_c = tf.tanh(all_c[t])
                d_h = d_h + d_outputs[t]
                d_c = d_c + d_h * s[:, 2 * units:] * (1 - tanh_c * tanh_c)
                d_s = tf.concat([d_c * g, d_c * prev_c[t], d_h * tanh_c], 1) * s * (1 - s)
                d_zt = tf.concat([d_s, d_c * s[:, :units] * (1 - g * g)], 1)
                return (k + 1, tf.matmul(d_zt, kernel_t), d_c * s[:, units: 2 * units],
                        d_z.write(t, d_zt))

            _, d_h0, d_c0, d_z = tf.while_loop(
                lambda k, *_: k < steps, backward,
                (0, d_h, d_c, tf.TensorArray(x_proj.dtype, size=steps)))
            d_z = d_z.stack()
            prev_h = tf.concat([h0[None], all_h[:-1]], 0)
            d_kernel = tf.matmul(tf.reshape(prev_h, [-1, units]), tf.reshape(d_z, [-1, 4 * units]),
                                 transpose_a=True)
            return d_z, d_h0, d_c0, d_kernel

        return (all_h, h, c), grad

    return run(x_proj, h0, c0, recurrent_kernel)


def lstm_step(x_proj, h, c, recurrent_kernel):
    """One LSTM step on [B, 4H] input projection, gates in (i, f, o, c) order."""
    units = tf.shape(h)[1]
    z = x_proj + tf.matmul(h, recurrent_kernel)
    s = tf.sigmoid(z[:, : 3 * units])
    c = s[:, units: 2 * units] * c + s[:, :units] * tf.tanh(z[:, 3 * units:])
    return s[:, 2 * units:] * tf.tanh(c), c


def gru_step(x_proj, h, recurrent_kernel, recurrent_bias):
    """One step of Keras' GRU (reset_after=True), gates (z, r, h); x_proj includes the input bias."""
    units = tf.shape(h)[1]
    inner = tf.matmul(h, recurrent_kernel) + recurrent_bias
    zr = tf.sigmoid(x_proj[:, : 2 * units] + inner[:, : 2 * units])
    candidate = tf.tanh(x_proj[:, 2 * units:] + zr[:, units:] * inner[:, 2 * units:])
    z = zr[:, :units]
    return z * h + (1 - z) * candidate


def simple_rnn_step(x_proj, h, recurrent_kernel):
    """One step of Keras' SimpleRNN (tanh); x_proj includes the bias."""
    return tf.tanh(x_proj + tf.matmul(h, recurrent_kernel))


def scan_sequence(step, x_proj, h0):
    """Runs a one-state step over a time-major projection; autodiff handles the backward pass."""
    steps = tf.shape(x_proj)[0]

    def body(t, h, hs):
        h = step(x_proj[t], h)
        return t + 1, h, hs.write(t, h)

    _, h, hs = tf.while_loop(lambda t, *_: t < steps, body,
                             (0, h0, tf.TensorArray(x_proj.dtype, size=steps)))
    return hs.stack(), h
