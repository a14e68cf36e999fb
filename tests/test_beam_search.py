"""Beam search finds the most probable sequence where greedy decoding does not."""

import itertools
import math

import numpy as np
import tensorflow as tf

from textgen.generation.beam_search import beam_search
from textgen.generation.decode_loop import decode_loop
from textgen.generation.samplers import GreedySampler

END = 0
# A hand-made model over tokens {0: <end>, 1: a, 2: b}. The state is the previous token.
# After <start> (3): a 0.6, b 0.4. After a: a 0.5, b 0.5 — a weak continuation.
# After b: <end> 0.95. The best sequence is "b <end>" (0.4 * 0.95 = 0.38), but greedy takes "a"
# first and can reach at most 0.6 * 0.5 * ... < 0.38.
TABLE = {3: [0.0, 0.6, 0.4], 1: [0.0, 0.5, 0.5], 2: [0.95, 0.025, 0.025], 0: [1.0, 0.0, 0.0]}


def step_fn(tokens, states):
    table = tf.constant([TABLE[0], TABLE[1], TABLE[2], TABLE[3]], tf.float32)
    probabilities = tf.gather(table, tokens)
    return tf.math.log(probabilities + 1e-12), states


def sequence_log_prob(sequence):
    previous, total = 3, 0.0
    for token in sequence:
        total += math.log(TABLE[previous][token] + 1e-12)
        if token == END:
            break
        previous = token
    return total


def test_beam_search_finds_the_best_sequence_where_greedy_does_not():
    first = tf.constant([3], tf.int32)
    states = [tf.zeros([1, 1])]
    greedy, _ = decode_loop(step_fn, first, states, 4, GreedySampler(), end_token=END)
    tokens, log_prob, length = beam_search(step_fn, first, states, 4, beam_size=3, end_token=END)
    greedy, tokens = list(greedy.numpy()[0]), list(tokens.numpy()[0])
    # The true best sequence, by exhaustive search over all sequences of 4 tokens.
    best = max(itertools.product(range(3), repeat=4), key=sequence_log_prob)
    assert tokens[:2] == [2, END] == list(best[:2])
    assert greedy[0] == 1  # greedy commits to "a"
    assert sequence_log_prob(greedy) < sequence_log_prob(tokens)
    np.testing.assert_allclose(float(log_prob[0]), math.log(0.4 * 0.95), rtol=1e-5)
    assert int(length[0]) == 1


def test_beam_of_one_is_greedy_and_rows_are_independent():
    first = tf.constant([3, 1, 2], tf.int32)
    states = [tf.zeros([3, 1])]
    greedy, _ = decode_loop(step_fn, first, states, 5, GreedySampler(), end_token=END)
    tokens, _, _ = beam_search(step_fn, first, states, 5, beam_size=1, end_token=END)
    np.testing.assert_array_equal(tokens.numpy(), greedy.numpy())


def test_forbidden_tokens():
    first = tf.constant([3], tf.int32)
    states = [tf.zeros([1, 1])]
    forbidden = tf.constant([False, False, True])  # never "b"
    tokens, _, _ = beam_search(
        step_fn, first, states, 4, beam_size=3, end_token=END, forbidden=forbidden
    )
    assert 2 not in list(tokens.numpy()[0])


def best_normalised(alpha, num_steps=4):
    """The sequence of at most `num_steps` tokens with the highest log_prob / steps**alpha, by
    exhaustive search; steps count the end token, a sequence cut at num_steps has num_steps."""

    def ranking(sequence):
        sequence = sequence[: sequence.index(END) + 1] if END in sequence else sequence
        return sequence_log_prob(sequence) / len(sequence) ** alpha

    best = max(itertools.product(range(3), repeat=num_steps), key=ranking)
    return list(best[: best.index(END) + 1] if END in best else best)


def test_length_normalisation_ranks_by_log_prob_per_step():
    # "b <end>": log 0.38 = -0.97 over 2 steps; "a b <end>": log 0.285 = -1.26 over 3 steps.
    # Plain log-probability prefers the short one; divided by steps**alpha, the long one once
    # alpha > 0.64, and at alpha 0.5 only if the end token were not counted as a step.
    assert best_normalised(0.0) == best_normalised(0.5) == [2, END]
    assert best_normalised(0.7) == best_normalised(1.0) == [1, 2, END]
    first = tf.constant([3], tf.int32)
    states = [tf.zeros([1, 1])]
    for alpha in (0.0, 0.5, 0.7, 1.0):
        tokens, log_prob, length = beam_search(
            step_fn, first, states, 4, beam_size=3, end_token=END, length_normalization=alpha
        )
        best = best_normalised(alpha)
        assert list(tokens.numpy()[0]) == best + [END] * (4 - len(best)), alpha
        # The log-probability returned stays the plain one; the length leaves out the end.
        np.testing.assert_allclose(float(log_prob[0]), sequence_log_prob(best), rtol=1e-5)
        assert int(length[0]) == len(best) - 1
    # The same inside a traced function (the exported SavedModel runs it in the graph), with
    # alpha a tensor.
    traced = tf.function(
        lambda f, alpha: beam_search(step_fn, f, states, 4, 3, END, length_normalization=alpha)
    )
    for alpha in (0.0, 0.7):
        tokens = traced(first, tf.constant(alpha))[0]
        assert tokens.shape == (1, 4)
        best = best_normalised(alpha)
        assert list(tokens.numpy()[0]) == best + [END] * (4 - len(best)), alpha


def test_num_results_gives_the_best_beams_in_order():
    first = tf.constant([3], tf.int32)
    states = [tf.zeros([1, 1])]
    tokens, log_probs, lengths = beam_search(
        step_fn, first, states, 4, beam_size=3, end_token=END, num_results=3
    )
    single, single_log_prob, _ = beam_search(step_fn, first, states, 4, 3, END)
    rows = [tuple(row) for row in tokens.numpy()[0]]  # padded with <end>
    scores = list(log_probs.numpy()[0])
    assert tokens.shape == (1, 3, 4) and len(set(rows)) == 3  # distinct sequences
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_array_equal(tokens.numpy()[0, 0], single.numpy()[0])
    np.testing.assert_allclose(scores[0], float(single_log_prob[0]))
    for row, score in zip(rows, scores):
        np.testing.assert_allclose(score, sequence_log_prob(row), rtol=1e-5)
