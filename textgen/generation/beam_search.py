"""Beam search over a step function, on the decoding loop's terms: TensorFlow ops only, so it
runs eagerly, under `tf.function` and inside an exported SavedModel."""

import tensorflow as tf


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
