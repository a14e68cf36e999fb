"""The one decoding loop that textgen priming and captioning <start>...<end> share.

As in keras-hub: the loop owns the time steps and takes a `step_fn`, the sampler sees only
probabilities. Everything is TensorFlow ops, so the same loop runs eagerly, under `tf.function`
and inside an exported SavedModel.
"""

import tensorflow as tf


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


def compiled_steps(step_fn, sampler, forbidden=None, steps_per_call=64, jit_compile=True):
    """The XLA-compiled block of `compiled_decode_loop`: a function
    (start, tokens, states, seed) -> (tokens, states, block [batch, steps_per_call]) that runs
    steps start ... start + steps_per_call - 1 of `decode_loop` (without an end token) in one
    call. Built once, it compiles once per batch size; `compiled_decode_loop` runs it in a graph
    loop, `compiled_decode_blocks` from Python, one block at a time, for streaming.
    `jit_compile=False` runs the same steps with TensorFlow's kernels (a SavedModel exported
    without XLA streams with it: `decode_loop`'s random draws)."""
    steps_per_call = int(steps_per_call)

    @tf.function(jit_compile=jit_compile, autograph=False)
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
    end_token=None,
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

    With `end_token`, the loop stops after the block in which every row has produced it, and
    each row's positions after its first `end_token` are filled with it, as `decode_loop`
    does; the tokens up to there are those without it.
    Returns tokens [batch, num_steps] int32.
    """
    first_tokens = tf.convert_to_tensor(first_tokens, tf.int32)
    batch = tf.shape(first_tokens)[0]
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    num_steps = tf.convert_to_tensor(num_steps, tf.int32)
    steps_per_call = int(steps_per_call)
    some_steps = compiled_steps(step_fn, sampler, forbidden, steps_per_call)

    calls = (num_steps + steps_per_call - 1) // steps_per_call
    if end_token is not None:
        return _compiled_decode_until(
            some_steps, first_tokens, states, num_steps, seed, calls, end_token
        )
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


def _compiled_decode_until(some_steps, first_tokens, states, num_steps, seed, calls, end_token):
    """`compiled_decode_loop` with an end token: blocks until every row has ended."""
    batch = tf.shape(first_tokens)[0]
    steps_per_call = some_steps.steps_per_call
    end_token = tf.convert_to_tensor(end_token, tf.int32)
    blocks = tf.TensorArray(
        tf.int32, size=0, dynamic_size=True, element_shape=[None, steps_per_call]
    )

    def body(i, tokens, states, finished, blocks):
        tokens, states, block = some_steps(i * steps_per_call, tokens, states, seed)
        finished = finished | tf.reduce_any(tf.equal(block, end_token), axis=1)
        return i + 1, tokens, states, finished, blocks.write(i, block)

    def keep_going(i, tokens, states, finished, blocks):
        return (i < calls) & ~tf.reduce_all(finished)

    done, _, _, _, blocks = tf.while_loop(
        keep_going,
        body,
        (0, first_tokens, list(states), tf.zeros([batch], tf.bool), blocks),
    )
    tokens = tf.cond(
        done > 0,
        lambda: tf.reshape(tf.transpose(blocks.stack(), [1, 0, 2]), [batch, -1]),
        lambda: tf.zeros([batch, 0], tf.int32),
    )
    tokens = tf.pad(
        tokens,
        [[0, 0], [0, tf.maximum(0, num_steps - tf.shape(tokens)[1])]],
        constant_values=end_token,
    )[:, :num_steps]
    return end_after_first(tokens, end_token)


def end_after_first(tokens, end_token):
    """`tokens` [batch, T] with every position after a row's first `end_token` set to it."""
    is_end = tf.cast(tf.equal(tokens, end_token), tf.int32)
    after = tf.cumsum(is_end, axis=1, exclusive=True) > 0
    return tf.where(after, end_token, tokens)


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
