"""Samplers and the one decoding loop that textgen priming and captioning <start>...<end> share.

As in keras-hub: the loop owns the time steps and takes a `step_fn`, the sampler sees only
probabilities. Everything is TensorFlow ops, so the same loop runs eagerly, under `tf.function`
and inside an exported SavedModel.
"""

import tensorflow as tf


class Sampler:
    """Chooses the next token from a [batch, vocab] probability matrix.

    Args:
        temperature: logits are divided by it before the softmax; lower is more conservative.
    """

    def __init__(self, temperature=1.0):
        self.temperature = temperature

    def compute_probabilities(self, logits, forbidden=None):
        """Softmax of logits / temperature; `forbidden` token ids get probability 0."""
        logits = tf.cast(logits, tf.float32)
        if forbidden is not None:
            logits = tf.where(forbidden, tf.constant(-1e9, tf.float32), logits)
        return tf.nn.softmax(logits / tf.cast(self.temperature, tf.float32), axis=-1)

    def get_next_token(self, probabilities, seed):
        raise NotImplementedError

    def __call__(self, step_fn, first_tokens, states, num_steps, seed=(0, 0), forbidden=None,
                 end_token=None):
        return decode_loop(step_fn, first_tokens, states, num_steps, self, seed, forbidden,
                           end_token)


class GreedySampler(Sampler):
    """Always the most probable token (temperature 0)."""

    def __init__(self):
        super().__init__(temperature=1.0)

    def get_next_token(self, probabilities, seed):
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)


class RandomSampler(Sampler):
    """Draws from the full distribution."""

    def get_next_token(self, probabilities, seed):
        return tf.reshape(tf.random.stateless_categorical(
            tf.math.log(probabilities + 1e-30), 1, seed, dtype=tf.int32), [-1])


class TopKSampler(Sampler):
    """Draws from the k most probable tokens, renormalised."""

    def __init__(self, k, temperature=1.0):
        super().__init__(temperature)
        self.k = k

    def get_next_token(self, probabilities, seed):
        k = tf.minimum(tf.cast(self.k, tf.int32), tf.shape(probabilities)[-1])
        top_probabilities, top_ids = tf.math.top_k(probabilities, k=k)
        choice = tf.random.stateless_categorical(tf.math.log(top_probabilities + 1e-30), 1, seed,
                                                 dtype=tf.int32)
        return tf.gather(top_ids, choice, batch_dims=1)[:, 0]


def make_sampler(temperature=1.0, top_k=0):
    """temperature 0 is argmax; top_k 0 means no top-k cut."""
    if temperature == 0:
        return GreedySampler()
    if top_k:
        return TopKSampler(top_k, temperature)
    return RandomSampler(temperature)


def decode_loop(step_fn, first_tokens, states, num_steps, sampler, seed=(0, 0), forbidden=None,
                end_token=None):
    """Feeds `first_tokens`, then each sampled token, to `step_fn` for `num_steps` steps.

    Args:
        step_fn: (tokens [batch] int32, states) -> (logits [batch, vocab], new states).
        first_tokens: [batch] int32, the last prime token or `<start>`.
        states: the recurrent states after the prime (a list of tensors).
        num_steps: how many tokens to produce.
        sampler: a `Sampler`.
        seed: two ints; step t draws with the seed (seed[0], seed[1] + t), so the same seed
            gives the same text whatever the batch size or the device.
        forbidden: optional bool [vocab] mask of tokens never to emit (e.g. `<unk>`, `<pad>`).
        end_token: optional id that ends a row; later positions are filled with it.
    Returns:
        (tokens [batch, num_steps] int32, lengths [batch] int32: tokens before `end_token`).
    """
    first_tokens = tf.convert_to_tensor(first_tokens, tf.int32)
    batch = tf.shape(first_tokens)[0]
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    num_steps = tf.convert_to_tensor(num_steps, tf.int32)
    finished = tf.zeros([batch], tf.bool)
    lengths = tf.zeros([batch], tf.int32)
    outputs = tf.TensorArray(tf.int32, size=num_steps)

    def body(t, tokens, states, finished, lengths, outputs):
        logits, states = step_fn(tokens, states)
        probabilities = sampler.compute_probabilities(logits, forbidden)
        next_tokens = sampler.get_next_token(probabilities, tf.stack([seed[0], seed[1] + t]))
        if end_token is not None:
            next_tokens = tf.where(finished, end_token, next_tokens)
            finished = finished | tf.equal(next_tokens, end_token)
        lengths = lengths + tf.cast(~finished, tf.int32)
        return t + 1, next_tokens, states, finished, lengths, outputs.write(t, next_tokens)

    def keep_going(t, tokens, states, finished, lengths, outputs):
        return (t < num_steps) & ~tf.reduce_all(finished)

    _, _, _, _, lengths, outputs = tf.while_loop(
        keep_going, body, (0, first_tokens, list(states), finished, lengths, outputs))
    tokens = tf.transpose(outputs.stack())
    if end_token is not None:
        # A loop that stopped early (every row finished) is padded up to num_steps.
        tokens = tf.pad(tokens, [[0, 0], [0, num_steps - tf.shape(tokens)[1]]],
                        constant_values=end_token)
    return tokens, lengths
