"""Beam search finds the most probable sequence where greedy decoding does not."""

import itertools
import math

import numpy as np
import tensorflow as tf

from textgen.sampler import GreedySampler, beam_search, decode_loop

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


def test_forbidden_tokens_and_length_normalisation():
    first = tf.constant([3], tf.int32)
    states = [tf.zeros([1, 1])]
    forbidden = tf.constant([False, False, True])  # never "b"
    tokens, _, _ = beam_search(step_fn, first, states, 4, beam_size=3, end_token=END,
                               forbidden=forbidden)
    assert 2 not in list(tokens.numpy()[0])
    # Works inside a traced function too (the exported SavedModel runs it in the graph).
    traced = tf.function(lambda f: beam_search(step_fn, f, states, 4, 2, END,
                                               length_normalization=0.7))
    assert traced(first)[0].shape == (1, 4)
