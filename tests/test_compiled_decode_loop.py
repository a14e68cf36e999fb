"""compiled_decode_loop (XLA, several steps per call) against decode_loop (one graph step per
token): the same argmax tokens, the state carried across calls, seeded draws that depend only on
the seed and the row, every step count including the ones that do not fill the last call."""

import numpy as np
import pytest
import tensorflow as tf

from textgen.generation.decode_loop import compiled_decode_loop, decode_loop
from textgen.generation.samplers import GreedySampler, RandomSampler, TopKSampler, draw

VOCAB = 7
rng = np.random.default_rng(0)
EMBED = tf.constant(rng.normal(0, 1, (VOCAB, 8)), tf.float32)
RECURRENT = tf.constant(rng.normal(0, 0.7, (8, 8)), tf.float32)
OUTPUT = tf.constant(rng.normal(0, 2, (8, VOCAB)), tf.float32)


def step_fn(tokens, states):
    """A tiny recurrent model: what it emits depends on its whole history through the state."""
    h = tf.tanh(tf.gather(EMBED, tokens) + tf.matmul(states[0], RECURRENT))
    return tf.matmul(h, OUTPUT), [h]


def run(loop, sampler, rows=3, steps=23, seed=(4, 0), **kwargs):
    first = tf.range(rows, dtype=tf.int32) % VOCAB
    states = [tf.zeros([rows, 8])]
    tokens = loop(step_fn, first, states, steps, sampler, seed, **kwargs)
    return (tokens[0] if isinstance(tokens, tuple) else tokens).numpy()


@pytest.mark.parametrize("steps", [0, 1, 5, 8, 23])
def test_greedy_tokens_equal_decode_loop(steps):
    expected = run(decode_loop, GreedySampler(), steps=steps)
    got = run(compiled_decode_loop, GreedySampler(), steps=steps, steps_per_call=8)
    assert got.shape == (3, steps)
    np.testing.assert_array_equal(got, expected)
    if steps > 8:  # the state must have crossed from one XLA call into the next
        assert len(set(got[0])) > 1


def test_same_seed_same_tokens_whatever_the_batch_and_call_size():
    sampler = RandomSampler(1.0)
    one = run(compiled_decode_loop, sampler, rows=1, steps_per_call=8)
    three = run(compiled_decode_loop, sampler, rows=3, steps_per_call=5)
    np.testing.assert_array_equal(three[:1], one)
    np.testing.assert_array_equal(run(compiled_decode_loop, sampler, steps_per_call=8), three)
    other = run(compiled_decode_loop, sampler, seed=(5, 0), steps_per_call=8)
    assert (other != three).any()


def test_top_k_draws_only_among_the_k_most_probable():
    top1 = run(compiled_decode_loop, TopKSampler(1, 1.0), steps_per_call=8)
    np.testing.assert_array_equal(top1, run(decode_loop, GreedySampler()))
    forbidden = tf.constant([False, True, False, False, False, False, False])
    drawn = run(
        compiled_decode_loop, TopKSampler(3, 2.0), steps=40, steps_per_call=16, forbidden=forbidden
    )
    assert 1 not in drawn and len(set(drawn.ravel())) > 1
    ranks = draw_ranks(drawn, forbidden)
    assert ranks.max() < 3, ranks  # every draw among the 3 most probable allowed tokens
    assert (ranks > 0).any()  # and not only the most probable one
    # The check can tell: drawn from the whole distribution, tokens outside the top 3 appear.
    unrestricted = run(
        compiled_decode_loop, RandomSampler(2.0), steps=40, steps_per_call=16, forbidden=forbidden
    )
    assert draw_ranks(unrestricted, forbidden).max() >= 3


def draw_ranks(drawn, forbidden, rows=3):
    """Replays `run`'s rows through step_fn and gives each drawn token's rank among the allowed
    tokens at its step (0: the most probable)."""
    tokens = tf.range(rows, dtype=tf.int32) % VOCAB
    states = [tf.zeros([rows, 8])]
    ranks = np.zeros(drawn.shape, np.int64)
    for t in range(drawn.shape[1]):
        logits, states = step_fn(tokens, states)
        logits = np.where(forbidden.numpy(), -np.inf, logits.numpy())
        above = logits > logits[np.arange(rows), drawn[:, t]][:, None]
        ranks[:, t] = above.sum(axis=1)
        tokens = tf.constant(drawn[:, t], tf.int32)
    return ranks


@pytest.mark.parametrize("compiled", [False, True])
def test_draws_follow_the_probabilities_and_never_take_a_zero_one(compiled):
    # Zero probabilities first, inside and last; the rows sum to 3, not 1.
    probabilities = np.array([0.0, 0.5, 0.0, 0.2, 0.3, 0.0], np.float32) * 3
    rows = 40_000
    function = tf.function(draw, jit_compile=True) if compiled else draw
    tokens = function(tf.constant(np.tile(probabilities, (rows, 1))), tf.constant([3, 9])).numpy()
    counts = np.bincount(tokens, minlength=6)
    assert counts[[0, 2, 5]].sum() == 0, counts
    expected = probabilities / probabilities.sum()
    # Four standard deviations of a binomial share over 40,000 draws: at most 0.01.
    np.testing.assert_allclose(counts / rows, expected, atol=0.01)
    # One certain token; and the same seed, the same draws.
    certain = function(tf.constant([[0.0, 0.0, 1.0]] * 50), tf.constant([1, 2])).numpy()
    assert (certain == 2).all()
    again = function(tf.constant(np.tile(probabilities, (rows, 1))), tf.constant([3, 9])).numpy()
    np.testing.assert_array_equal(again, tokens)
