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


def make_sampler(temperature=1.0, top_k=0):
    """temperature 0 is argmax; top_k 0 means no top-k cut."""
    if temperature == 0:
        return GreedySampler()
    if top_k:
        return TopKSampler(top_k, temperature)
    return RandomSampler(temperature)


def _sample_step(step_fn, sampler, seed, forbidden, end_token):
    """One decoding step, shared by `decode_loop` and `compiled_decode_loop`: step t feeds
    `tokens`, draws the next ones with the seed (seed[0], seed[1] + t), and (with an end token)
    keeps finished rows finished."""

    def one_step(t, tokens, states, finished, lengths):
        logits, states = step_fn(tokens, states)
        probabilities = sampler.compute_probabilities(logits, forbidden)
        next_tokens = sampler.get_next_token(probabilities, tf.stack([seed[0], seed[1] + t]))
        if end_token is not None:
            next_tokens = tf.where(finished, end_token, next_tokens)
            finished = finished | tf.equal(next_tokens, end_token)
        lengths = lengths + tf.cast(~finished, tf.int32)
        return next_tokens, states, finished, lengths

    return one_step


def decode_loop(
    step_fn, first_tokens, states, num_steps, sampler, seed=(0, 0), forbidden=None, end_token=None
):
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
    one_step = _sample_step(step_fn, sampler, seed, forbidden, end_token)

    def body(t, tokens, states, finished, lengths, outputs):
        tokens, states, finished, lengths = one_step(t, tokens, states, finished, lengths)
        return t + 1, tokens, states, finished, lengths, outputs.write(t, tokens)

    def keep_going(t, tokens, states, finished, lengths, outputs):
        return (t < num_steps) & ~tf.reduce_all(finished)

    _, _, _, _, lengths, outputs = tf.while_loop(
        keep_going, body, (0, first_tokens, list(states), finished, lengths, outputs)
    )
    # Stacking an empty TensorArray fails when the batch size is not static, hence the cond.
    tokens = tf.cond(
        outputs.size() > 0,
        lambda: tf.transpose(outputs.stack()),
        lambda: tf.zeros([batch, 0], tf.int32),
    )
    if end_token is not None:
        # A loop that stopped early (every row finished) is padded up to num_steps.
        tokens = tf.pad(
            tokens, [[0, 0], [0, num_steps - tf.shape(tokens)[1]]], constant_values=end_token
        )
    return tokens, lengths


def compiled_steps(step_fn, sampler, forbidden=None, steps_per_call=64):
    """The XLA-compiled block of `compiled_decode_loop`: a function
    (start, tokens, states, seed) -> (tokens, states, block [batch, steps_per_call]) that runs
    steps start ... start + steps_per_call - 1 of `decode_loop` (without an end token) in one
    call. Built once, it compiles once per batch size; `compiled_decode_loop` runs it in a graph
    loop, `compiled_decode_blocks` from Python, one block at a time, for streaming."""
    steps_per_call = int(steps_per_call)

    @tf.function(jit_compile=True, autograph=False)
    def some_steps(start, tokens, states, seed):
        one_step = _sample_step(step_fn, sampler, seed, forbidden, None)
        outputs = tf.TensorArray(tf.int32, size=steps_per_call)
        finished, lengths = tf.zeros_like(tokens, tf.bool), tf.zeros_like(tokens)

        def body(k, tokens, states, outputs):
            tokens, states, _, _ = one_step(start + k, tokens, states, finished, lengths)
            return k + 1, tokens, states, outputs.write(k, tokens)

        _, tokens, states, outputs = tf.while_loop(
            lambda k, *_: k < steps_per_call, body, (0, tokens, list(states), outputs)
        )
        return tokens, states, tf.transpose(outputs.stack())  # [batch, steps_per_call]

    some_steps.steps_per_call = steps_per_call
    return some_steps


def compiled_decode_loop(
    step_fn,
    first_tokens,
    states,
    num_steps,
    sampler,
    seed=(0, 0),
    forbidden=None,
    steps_per_call=64,
):
    """`decode_loop` (without an end token) with its steps compiled by XLA, `steps_per_call` at a
    time: for long generations, such as textgen's text.

    In `decode_loop` every small op of a step (the step's, the sampler's, the loop's own) costs
    TensorFlow's graph executor a few microseconds, which for one stream is more than the step's
    arithmetic. Here one XLA call runs `steps_per_call` whole steps (model, sampler and loop
    fused into native code), and an ordinary while loop makes ceil(num_steps / steps_per_call)
    such calls; the surplus steps of the last call are dropped. XLA compiles once per batch size,
    sampler and step function, on the first call (a second or two).

    Same arguments and tokens as `decode_loop` with one difference: random draws come from XLA's
    random kernels, which give other (equally random) numbers than TensorFlow's CPU kernels for
    the same seed. The same seed still gives the same text, whatever the batch size; greedy
    decoding gives exactly `decode_loop`'s tokens. `states` must be a flat list of tensors.
    Returns tokens [batch, num_steps] int32.
    """
    first_tokens = tf.convert_to_tensor(first_tokens, tf.int32)
    batch = tf.shape(first_tokens)[0]
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    num_steps = tf.convert_to_tensor(num_steps, tf.int32)
    steps_per_call = int(steps_per_call)
    some_steps = compiled_steps(step_fn, sampler, forbidden, steps_per_call)

    calls = (num_steps + steps_per_call - 1) // steps_per_call
    blocks = tf.TensorArray(tf.int32, size=calls, element_shape=[None, steps_per_call])

    def body(i, tokens, states, blocks):
        tokens, states, block = some_steps(i * steps_per_call, tokens, states, seed)
        return i + 1, tokens, states, blocks.write(i, block)

    _, _, _, blocks = tf.while_loop(
        lambda i, *_: i < calls, body, (0, first_tokens, list(states), blocks)
    )
    tokens = tf.cond(
        calls > 0,
        lambda: tf.reshape(tf.transpose(blocks.stack(), [1, 0, 2]), [batch, -1]),
        lambda: tf.zeros([batch, 0], tf.int32),
    )
    return tokens[:, :num_steps]


def compiled_decode_blocks(some_steps, first_tokens, states, num_steps, seed=(0, 0)):
    """`compiled_decode_loop` run from Python: yields its tokens as they are made, one block of
    `some_steps.steps_per_call` tokens (numpy [batch, k], the last block cut to `num_steps`) per
    XLA call. `some_steps` is a `compiled_steps` function, which can be kept and reused, so a
    prompt loop compiles once. The tokens equal `compiled_decode_loop`'s for the same step
    function, sampler and seed."""
    tokens = tf.convert_to_tensor(first_tokens, tf.int32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    states = list(states)
    steps_per_call = some_steps.steps_per_call
    for start in range(0, int(num_steps), steps_per_call):
        tokens, states, block = some_steps(tf.constant(start, tf.int32), tokens, states, seed)
        yield block.numpy()[:, : int(num_steps) - start]


def beam_search(
    step_fn,
    first_tokens,
    states,
    num_steps,
    beam_size,
    end_token,
    forbidden=None,
    length_normalization=0.0,
    num_results=None,
):
    """Beam search over the same `step_fn` as `decode_loop`, all TensorFlow ops.

    Keeps the `beam_size` most probable partial sequences of every row. A beam that emits
    `end_token` is finished: it keeps its score and only ever extends by `end_token` again.

    Args:
        step_fn, first_tokens, states, num_steps, forbidden, end_token: as in `decode_loop`.
        beam_size: beams per row; 1 is greedy decoding.
        length_normalization: alpha; finished sequences are ranked by log_prob / length**alpha
            (0: plain log-probability, which favours short sequences).
    Returns:
        (tokens [batch, num_steps] int32 padded with end_token, log_probs [batch] float32 of
        the chosen sequences (end token included), lengths [batch] int32 without the end token).
        With `num_results` k (<= beam_size, may be a tensor): the k best beams of every row,
        best first, as tokens [batch, k, num_steps], log_probs [batch, k], lengths [batch, k];
        the first is the one returned without it (ties go to the lower beam either way).
    """
    first_tokens = tf.convert_to_tensor(first_tokens, tf.int32)
    num_steps = tf.convert_to_tensor(num_steps, tf.int32)
    beam_size = tf.convert_to_tensor(beam_size, tf.int32)
    batch = tf.shape(first_tokens)[0]

    def expand(x):  # [batch, ...] -> [batch * beam, ...], beams of a row side by side
        return tf.repeat(x, beam_size, axis=0)

    tokens = expand(first_tokens)
    states = [expand(s) for s in states]
    # Only beam 0 is live at the start, so the first step does not pick k copies of one token.
    scores = tf.tile(tf.concat([[0.0], tf.fill([beam_size - 1], -1e9)], 0)[None], [batch, 1])
    finished = tf.zeros([batch, beam_size], tf.bool)
    lengths = tf.zeros([batch, beam_size], tf.int32)
    history = tf.fill([batch, beam_size, num_steps], tf.cast(end_token, tf.int32))

    def body(t, tokens, states_in, scores_in, finished_in, lengths_in, history_in):
        scores, finished, lengths, history = scores_in, finished_in, lengths_in, history_in
        logits, states = step_fn(tokens, states_in)
        logits = tf.cast(logits, tf.float32)
        if forbidden is not None:
            logits = tf.where(forbidden, tf.constant(-1e9, tf.float32), logits)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        vocabulary = tf.shape(log_probs)[-1]
        log_probs = tf.reshape(log_probs, [batch, beam_size, vocabulary])
        # A finished beam extends only by end_token, at no cost.
        only_end = tf.where(tf.range(vocabulary) == end_token, 0.0, -1e9)
        log_probs = tf.where(finished[:, :, None], only_end[None, None], log_probs)
        candidates = tf.reshape(scores[:, :, None] + log_probs, [batch, -1])
        scores, flat = tf.math.top_k(candidates, k=beam_size)
        parents = flat // vocabulary
        new_tokens = tf.cast(flat % vocabulary, tf.int32)
        finished_before = tf.gather(finished, parents, batch_dims=1)
        lengths = tf.gather(lengths, parents, batch_dims=1) + tf.cast(
            ~finished_before & (new_tokens != end_token), tf.int32
        )
        finished = finished_before | (new_tokens == end_token)
        history = tf.gather(history, parents, batch_dims=1)
        history = tf.where((tf.range(num_steps) == t)[None, None], new_tokens[:, :, None], history)
        rows = tf.reshape(parents + tf.range(batch)[:, None] * beam_size, [-1])
        new = (
            tf.reshape(new_tokens, [-1]),
            [tf.gather(s, rows) for s in states],
            scores,
            finished,
            lengths,
            history,
        )
        old = (tokens, states_in, scores_in, finished_in, lengths_in, history_in)
        # Static shapes stay as they entered the loop (top_k with a tensor k loses them).
        return (t + 1,) + tuple(
            tf.nest.map_structure(lambda n, o: tf.ensure_shape(n, o.shape), new, old)
        )

    def keep_going(t, tokens, states, scores, finished, lengths, history):
        return (t < num_steps) & ~tf.reduce_all(finished)

    _, _, _, scores, finished, lengths, history = tf.while_loop(
        keep_going, body, (0, tokens, list(states), scores, finished, lengths, history)
    )
    # Rank by length-normalised score; the end token counts as one more step of length.
    steps = tf.cast(lengths + tf.cast(finished, tf.int32), tf.float32)
    ranking = scores / tf.pow(tf.maximum(steps, 1.0), tf.cast(length_normalization, tf.float32))
    if num_results is not None:
        _, best = tf.math.top_k(ranking, k=tf.convert_to_tensor(num_results, tf.int32))
        return (
            tf.gather(history, best, batch_dims=1),
            tf.gather(scores, best, batch_dims=1),
            tf.gather(lengths, best, batch_dims=1),
        )
    best = tf.argmax(ranking, axis=1, output_type=tf.int32)
    return (
        tf.gather(history, best, batch_dims=1),
        tf.gather(scores, best, batch_dims=1),
        tf.gather(lengths, best, batch_dims=1),
    )
