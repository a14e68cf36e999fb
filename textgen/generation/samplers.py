"""Samplers: each chooses the next token from a [batch, vocab] probability matrix and sees
nothing else (as in keras-hub), so one decoding loop serves them all."""

import tensorflow as tf

from textgen.generation.decode_loop import decode_loop


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

    def __call__(
        self, step_fn, first_tokens, states, num_steps, seed=(0, 0), forbidden=None, end_token=None
    ):
        return decode_loop(
            step_fn, first_tokens, states, num_steps, self, seed, forbidden, end_token
        )


class GreedySampler(Sampler):
    """Always the most probable token (temperature 0)."""

    def __init__(self):
        super().__init__(temperature=1.0)

    def get_next_token(self, probabilities, seed):
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)


class RandomSampler(Sampler):
    """Draws from the full distribution."""

    def get_next_token(self, probabilities, seed):
        return draw(probabilities, seed)


class TopKSampler(Sampler):
    """Draws from the k most probable tokens, renormalised."""

    def __init__(self, k, temperature=1.0):
        super().__init__(temperature)
        self.k = k

    def get_next_token(self, probabilities, seed):
        k = tf.minimum(tf.cast(self.k, tf.int32), tf.shape(probabilities)[-1])
        top_probabilities, top_ids = tf.math.top_k(probabilities, k=k)
        choice = draw(top_probabilities, seed)
        return tf.gather(top_ids, choice[:, None], batch_dims=1)[:, 0]


class NucleusSampler(Sampler):
    """Draws from the smallest set of most probable tokens whose probabilities add up to at
    least `top_p` (Holtzman et al.'s nucleus sampling), after a top-k cut when `k` > 0. Both
    may be tensors (an exported model's inputs): `top_p` 1 and `k` 0 cut nothing."""

    def __init__(self, k=0, top_p=1.0, temperature=1.0):
        super().__init__(temperature)
        self.k, self.top_p = k, top_p

    def get_next_token(self, probabilities, seed):
        size = tf.shape(probabilities)[-1]
        k = tf.cast(self.k, tf.int32)
        k = tf.where(k > 0, tf.minimum(k, size), size)
        top_probabilities, top_ids = tf.math.top_k(probabilities, k=k)  # most probable first
        total = tf.reduce_sum(top_probabilities, axis=-1, keepdims=True)
        before = tf.cumsum(top_probabilities, axis=-1, exclusive=True) / total
        # A token is kept while the ones before it have not reached top_p: the first always is.
        top_p = tf.cast(self.top_p, probabilities.dtype)
        kept = tf.where(before < top_p, top_probabilities, tf.zeros_like(top_probabilities))
        choice = draw(kept, seed)
        return tf.gather(top_ids, choice[:, None], batch_dims=1)[:, 0]


def draw(probabilities, seed):
    """One token id per row of `probabilities` [batch, vocab] (rows need not sum to 1), drawn by
    inverting the cumulative distribution with one uniform number per row.

    The cumulative sums are one small matmul with an upper-triangular matrix of ones. Under XLA
    on a CPU this costs a tenth of `tf.random.stateless_categorical`, which draws one random
    number per token and takes two logarithms of each (bench/README.md): at 64 streams that
    draw alone took 15% of a generation step. Rounding in the sums can leave a token of
    probability zero (forbidden, or outside the top k) a window of an ulp; a draw that falls in
    one takes the most probable token instead, so such tokens never come out.
    """
    probabilities = tf.convert_to_tensor(probabilities)
    size = tf.shape(probabilities)[-1]
    upper = tf.cast(tf.range(size)[:, None] <= tf.range(size)[None, :], probabilities.dtype)
    cumulative = tf.matmul(probabilities, upper)
    uniform = tf.random.stateless_uniform(
        tf.shape(probabilities)[:1], seed, dtype=probabilities.dtype
    )
    target = (1.0 - uniform)[:, None] * cumulative[:, -1:]  # in (0, the row's total]
    tokens = tf.minimum(tf.reduce_sum(tf.cast(cumulative < target, tf.int32), axis=-1), size - 1)
    chosen = tf.gather(probabilities, tokens[:, None], batch_dims=1)[:, 0]
    return tf.where(chosen > 0, tokens, tf.argmax(probabilities, axis=-1, output_type=tf.int32))


def make_sampler(temperature=1.0, top_k=0, top_p=1.0):
    """temperature 0 is argmax; top_k 0 means no top-k cut, top_p 1 no nucleus cut."""
    if temperature == 0:
        return GreedySampler()
    if top_p < 1:
        return NucleusSampler(top_k, top_p, temperature)
    if top_k:
        return TopKSampler(top_k, temperature)
    return RandomSampler(temperature)
