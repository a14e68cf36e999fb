"""The conditioning projection Wih, shared by the captioner and the conditioned language model.

A conditioning vector v (a captioner's image features, a language model's label embedding)
enters the recurrent stack through a learned projection into the first layer's gates:

    h_t = tanh(Wxh x_t + Whh h_{t-1} + Wih v m_t + b)      (an LSTM or GRU: every gate)

where m_t says at which steps v acts. The captioner sets m_t = 1 at the first step only, the
one that feeds <start> (cs231n's h1 = tanh(Wxh x0 + Whh h0 + Wih v)). A conditioned language
model sets it at every step, or at each document's first step (`textgen.train
--label-injection`).

It is built from the stock recurrent layers, unchanged: the first layer's input is
concat(x_t, v m_t), so its kernel has [input_size + conditioning_size] rows, of which rows
[:input_size] are Wxh and rows [input_size:] are Wih (`input_projections`). Every kernel of
`RecurrentStack` (stock Keras, the fused TF ops, the C++ ops) runs it as it runs any input, and
a checkpoint holds Wih where the first layer's kernel is.

At generation time the lean models fold Wih v into one row of pre-activations per sequence
(`projected_conditioning`), added to the first layer's input projection where m_t is 1.
"""

import tensorflow as tf


def conditioned_inputs(inputs, vectors, mask):
    """concat(inputs, v * m): inputs [B, T, D], vectors [B, F] (one per sequence) or
    [B, T, F] (one per step), mask [B, T] bool or float (m_t) -> [B, T, D + F]."""
    vectors = tf.cast(vectors, inputs.dtype)
    if vectors.shape.rank == 2:
        vectors = tf.broadcast_to(
            vectors[:, None, :], tf.concat([tf.shape(inputs)[:2], tf.shape(vectors)[1:]], 0)
        )
    return tf.concat([inputs, vectors * tf.cast(mask, inputs.dtype)[..., None]], axis=-1)


def first_step_mask(tokens):
    """m_t = 1{t == 0} for tokens [B, T]: the captioner's rule."""
    return tf.broadcast_to(tf.range(tf.shape(tokens)[1])[None, :] == 0, tf.shape(tokens))


def input_projections(recurrent_stack, input_size):
    """(Wxh [input_size, gates*H], Wih [conditioning_size, gates*H]): the two row blocks of the
    first recurrent layer's kernel (Keras gate order: LSTM i, f, c, o; GRU z, r, h)."""
    kernel = recurrent_stack.recurrent_layers[0].cell.kernel
    return kernel[:input_size], kernel[input_size:]


def projected_conditioning(vectors, projection):
    """Wih v for each sequence: vectors [B, F] @ projection [F, gates*H] -> [B, gates*H], what
    the first layer's input projection gains at the steps where v acts."""
    return tf.matmul(tf.cast(vectors, projection.dtype), projection)
