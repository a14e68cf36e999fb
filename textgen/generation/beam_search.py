"""Beam search over a step function, on the decoding loop's terms: TensorFlow ops only, so it
runs eagerly, under `tf.function` and inside an exported SavedModel."""

import tensorflow as tf

from textgen.generation.beam_controls import (
    BeamControls,
    constrained_log_probs,
    ranking,
)


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
    controls=None,
):
    """Beam search over the same `step_fn` as `decode_loop`, all TensorFlow ops.

    Keeps the `beam_size` most probable partial sequences of every row. A beam that emits
    `end_token` is finished: it keeps its score and only ever extends by `end_token` again.

    Args:
        step_fn, first_tokens, states, num_steps, forbidden, end_token: as in `decode_loop`.
        beam_size: beams per row; 1 is greedy decoding.
        length_normalization: alpha; finished sequences are ranked by log_prob / length**alpha
            (0: plain log-probability, which favours short sequences).
        controls: a `BeamControls` (length penalty, n-gram and word blocking, bad endings,
            diverse groups); its `length_normalization` replaces the argument's. None: none.
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
    constrained = controls is not None
    if controls is None:
        controls = BeamControls(length_normalization=length_normalization)
    groups = tf.convert_to_tensor(controls.diverse_groups, tf.int32)
    tf.debugging.assert_equal(
        beam_size % groups, 0, "beam_size must be a multiple of diverse_groups"
    )
    per_group = beam_size // groups

    def expand(x):  # [batch, ...] -> [batch * beam, ...], beams of a row side by side
        return tf.repeat(x, beam_size, axis=0)

    tokens = expand(first_tokens)
    states = [expand(s) for s in states]
    # Only the first beam of each group is live at the start, so the first step does not pick
    # k copies of one token.
    live = tf.equal(tf.range(beam_size) % per_group, 0)
    scores = tf.tile(tf.where(live, 0.0, -1e9)[None], [batch, 1])
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
        if constrained:
            log_probs = constrained_log_probs(log_probs, history, t, num_steps, end_token, controls)
        # A finished beam extends only by end_token, at no cost.
        only_end = tf.where(tf.range(vocabulary) == end_token, 0.0, -1e9)
        log_probs = tf.where(finished[:, :, None], only_end[None, None], log_probs)
        candidates = scores[:, :, None] + log_probs
        if constrained:
            scores, flat = tf.cond(
                groups > 1,
                lambda: diverse_top_k(candidates, groups, per_group, end_token, controls),
                lambda: tuple(tf.math.top_k(tf.reshape(candidates, [batch, -1]), k=beam_size)),
            )
        else:
            scores, flat = tf.math.top_k(tf.reshape(candidates, [batch, -1]), k=beam_size)
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
    # Rank by length-penalised score; the end token counts as one more step of length.
    ranked = ranking(scores, lengths + tf.cast(finished, tf.int32), controls)
    if constrained:
        # Diverse groups can reach one sequence twice; the copy ranks last, so that the
        # `num_results` best are distinct where the beams hold that many.
        same = tf.reduce_all(tf.equal(history[:, :, None], history[:, None]), axis=-1)
        earlier = tf.range(beam_size)[None, :] < tf.range(beam_size)[:, None]  # [i, j]: j < i
        copy = tf.reduce_any(same & earlier[None], axis=-1)
        ranked = tf.where(copy, tf.constant(-3e9, ranked.dtype), ranked)
    if num_results is not None:
        _, best = tf.math.top_k(ranked, k=tf.convert_to_tensor(num_results, tf.int32))
        return (
            tf.gather(history, best, batch_dims=1),
            tf.gather(scores, best, batch_dims=1),
            tf.gather(lengths, best, batch_dims=1),
        )
    best = tf.argmax(ranked, axis=1, output_type=tf.int32)
    return (
        tf.gather(history, best, batch_dims=1),
        tf.gather(scores, best, batch_dims=1),
        tf.gather(lengths, best, batch_dims=1),
    )


def diverse_top_k(candidates, groups, per_group, end_token, controls):
    """Diverse beam search's choice of a step: (scores [batch, beams], flat indices [batch,
    beams] into beams x vocabulary), as `tf.math.top_k` over all candidates gives plain beam
    search's. The groups choose in turn, each its `per_group` best among its own beams'
    candidates, less `diversity` nats for each time an earlier group chose the same token at this
    step (the end token is free: a finished beam has no other). The scores stay the sequences'
    own log-probabilities; the penalty only steers the choice."""
    shape = tf.shape(candidates)
    batch, vocabulary = shape[0], shape[2]
    diversity = tf.cast(controls.diversity, candidates.dtype)
    not_end = tf.not_equal(tf.range(vocabulary), end_token)

    def choose(g, chosen, all_scores, all_flat):
        own = candidates[:, g * per_group : (g + 1) * per_group]
        penalty = diversity * tf.cast(chosen, candidates.dtype)[:, None, :]
        flat_own = tf.reshape(own, [batch, -1])
        _, picked = tf.math.top_k(tf.reshape(own - penalty, [batch, -1]), k=per_group)
        index = tf.reshape(tf.range(batch)[:, None] * vocabulary + picked % vocabulary, [-1])
        counts = tf.math.unsorted_segment_sum(tf.ones_like(index), index, batch * vocabulary)
        chosen += tf.reshape(counts, [batch, vocabulary]) * tf.cast(not_end, tf.int32)[None]
        all_scores = all_scores.write(g, tf.gather(flat_own, picked, batch_dims=1))
        all_flat = all_flat.write(g, picked + g * per_group * vocabulary)
        return g + 1, chosen, all_scores, all_flat

    _, _, all_scores, all_flat = tf.while_loop(
        lambda g, *_: g < groups,
        choose,
        (
            0,
            tf.zeros([batch, vocabulary], tf.int32),
            tf.TensorArray(candidates.dtype, size=groups),
            tf.TensorArray(tf.int32, size=groups),
        ),
    )

    def in_beam_order(array):  # [groups, batch, per_group] -> [batch, beams]
        return tf.reshape(tf.transpose(array.stack(), [1, 0, 2]), [batch, -1])

    return in_beam_order(all_scores), in_beam_order(all_flat)
