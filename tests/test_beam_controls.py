"""The beam-search controls (textgen.generation.beam_controls), each on a hand-made model where it
must change the result: the model's state is its previous token and a table gives the next
token's probabilities, so the best sequence with and without each control is known."""

import math

import numpy as np
import pytest
import tensorflow as tf

from textgen.generation.beam_controls import BeamControls, ranking
from textgen.generation.beam_search import beam_search

WORDS = ["<end>", "a", "red", "circle", "with", "and", "blue", "square", "<start>"]
END, START = 0, WORDS.index("<start>")
ID = {word: i for i, word in enumerate(WORDS)}


def table_model(rows):
    """A step function whose next-token distribution depends only on the previous token:
    `rows` maps a word to {next word: probability}; the rest of each row shares what is left
    over, thinly."""
    table = np.full((len(WORDS), len(WORDS)), 1e-6)
    for word, following in rows.items():
        for next_word, probability in following.items():
            table[ID[word], ID[next_word]] = probability
    table /= table.sum(axis=1, keepdims=True)
    log_table = tf.constant(np.log(table), tf.float32)

    def step_fn(tokens, states):
        return tf.gather(log_table, tokens), states

    return step_fn


def search(rows, num_steps=8, beam_size=3, num_results=None, **controls):
    first = tf.constant([START], tf.int32)
    given = BeamControls(**controls) if controls else None
    tokens, scores, lengths = beam_search(
        table_model(rows),
        first,
        [tf.zeros([1, 1])],
        num_steps,
        beam_size,
        END,
        num_results=num_results,
        controls=given,
    )
    if num_results is None:
        return words_of(tokens.numpy()[0], int(lengths.numpy()[0])), float(scores.numpy()[0])
    return [
        words_of(row, int(length)) for row, length in zip(tokens.numpy()[0], lengths.numpy()[0])
    ]


def words_of(row, length):
    return [WORDS[i] for i in row[:length]]


def ngrams(words, n):
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


# "a red circle" over and over: after "circle" the model would rather start again than end.
LOOPING = {
    "<start>": {"a": 0.9, "blue": 0.1},
    "a": {"red": 0.9, "blue": 0.1},
    "red": {"circle": 0.9, "square": 0.1},
    "circle": {"a": 0.8, "and": 0.1, "<end>": 0.1},
    "and": {"a": 0.5, "blue": 0.5},
    "blue": {"square": 0.9, "circle": 0.1},
    "square": {"<end>": 0.9, "a": 0.1},
}


def test_the_defaults_leave_beam_search_exactly_as_it_is():
    """Every control at its default, through the constrained code path, gives the same tokens
    and the same float32 scores as beam search without controls."""
    for beam_size in (1, 3):
        plain = beam_search(
            table_model(LOOPING), [START], [tf.zeros([1, 1])], 8, beam_size, END, num_results=None
        )
        controlled = beam_search(
            table_model(LOOPING),
            [START],
            [tf.zeros([1, 1])],
            8,
            beam_size,
            END,
            controls=BeamControls(
                repeatable=tf.constant([True] * len(WORDS)),
                bad_ending_tokens=tf.constant([False] * len(WORDS)),
            ),
        )
        for a, b in zip(plain, controlled):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_block_repeat_ngrams_leaves_no_ngram_twice(n):
    free, _ = search(LOOPING, num_steps=10)
    assert len(set(ngrams(free, n))) < len(ngrams(free, n))  # the model repeats itself
    blocked, _ = search(LOOPING, num_steps=10, block_repeat_ngrams=n)
    assert blocked != free
    assert len(set(ngrams(blocked, n))) == len(ngrams(blocked, n)), blocked


def test_no_repeat_words_lets_only_the_repeatable_words_repeat():
    repeatable = tf.constant([word in ("<end>", "a", "and") for word in WORDS])
    words, _ = search(LOOPING, num_steps=10, no_repeat_words=True, repeatable=repeatable)
    content = [w for w in words if w not in ("a", "and")]
    assert len(content) == len(set(content)), words
    # Off, the same mask changes nothing.
    off, _ = search(LOOPING, num_steps=10, no_repeat_words=False, repeatable=repeatable)
    assert off == search(LOOPING, num_steps=10)[0]


DANGLING = {
    "<start>": {"a": 1.0},
    "a": {"red": 0.6, "blue": 0.4},
    "red": {"circle": 1.0},
    "circle": {"with": 0.9, "<end>": 0.1},
    "with": {"<end>": 0.9, "a": 0.1},
    "blue": {"square": 1.0},
    "square": {"<end>": 0.5, "and": 0.5},
    "and": {"<end>": 0.8, "a": 0.2},
}
BAD = tf.constant([word in ("a", "with", "and") for word in WORDS])


def test_bad_endings_forbid_ending_after_a_dangling_word():
    free, _ = search(DANGLING)
    assert free[-1] == "with"  # "a red circle with": the model's favourite
    fixed, _ = search(DANGLING, bad_endings=True, bad_ending_tokens=BAD)
    assert fixed[-1] not in ("a", "with", "and"), fixed
    assert fixed == ["a", "blue", "square"]
    # With the limit near, the search does not step onto a bad ending it could not leave.
    assert search(DANGLING, num_steps=5)[0] == ["a", "red", "circle", "with"]
    short, _ = search(DANGLING, num_steps=5, bad_endings=True, bad_ending_tokens=BAD)
    assert short[-1] not in ("a", "with", "and") and len(short) <= 4, short


# A likely start with four continuations and an unlikely one with two: plain beam search keeps
# continuations of the likelier start, which differ in their last word only.
BRANCHING = {
    "<start>": {"a": 0.7, "and": 0.3},
    "a": {"red": 0.25, "circle": 0.25, "square": 0.25, "with": 0.25},
    "and": {"blue": 0.5, "with": 0.5},
    "red": {"<end>": 1.0},
    "circle": {"<end>": 1.0},
    "square": {"<end>": 1.0},
    "blue": {"<end>": 1.0},
    "with": {"<end>": 1.0},
}


@pytest.mark.parametrize("beam_size", [2, 4])
def test_diverse_groups_give_n_best_lists_that_differ_in_more_than_one_word(beam_size):
    plain = search(BRANCHING, beam_size=beam_size, num_results=beam_size)
    assert {words[0] for words in plain} == {"a"}
    diverse = search(
        BRANCHING,
        beam_size=beam_size,
        num_results=beam_size,
        diverse_groups=beam_size,
        diversity=2.0,
    )
    assert {words[0] for words in diverse} == {"a", "and"}, diverse
    assert diverse[0] == plain[0]  # the first group chooses without a penalty
    # One group is plain beam search, and so are groups without a penalty.
    one_group = dict(beam_size=beam_size, num_results=beam_size, diversity=2.0)
    assert search(BRANCHING, diverse_groups=1, **one_group) == plain
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of diverse_groups"):
        search(BRANCHING, beam_size=3, diverse_groups=2)


# So sure of "a red" that a small penalty cannot move the second group off it.
PEAKED = {
    "<start>": {"a": 0.98, "blue": 0.01, "and": 0.01},
    "a": {"red": 0.98, "blue": 0.01, "circle": 0.01},
    "red": {"<end>": 0.98, "circle": 0.01, "square": 0.01},
    "blue": {"<end>": 1.0},
    "and": {"<end>": 1.0},
    "circle": {"<end>": 1.0},
    "square": {"<end>": 1.0},
}


def test_a_sequence_two_groups_reach_is_listed_once():
    results = search(PEAKED, beam_size=4, num_results=3, diverse_groups=2, diversity=0.5)
    assert results[0] == ["a", "red"]
    assert len({tuple(words) for words in results}) == 3, results


# A short sequence that is likelier as a whole, and a long one that is likelier per word.
LENGTHS = {
    "<start>": {"red": 0.5, "blue": 0.5},
    "red": {"<end>": 0.8, "circle": 0.2},
    "blue": {"square": 0.8, "<end>": 0.2},
    "square": {"circle": 0.8, "<end>": 0.2},
    "circle": {"<end>": 0.6, "with": 0.4},
    "with": {"<end>": 1.0},
}
LONG = ["blue", "square", "circle"]


def test_length_penalty_and_normalisation_let_the_longer_caption_win():
    """ "red": 0.4 (2 steps with the end); "blue square circle": 0.192 (4 steps)."""
    assert search(LENGTHS, num_steps=4, beam_size=4)[0] == ["red"]
    wu, score = search(LENGTHS, num_steps=4, beam_size=4, length_penalty=3.0)
    assert wu == LONG  # -1.650 / (9/6)^3 = -0.489 against -0.916 / (7/6)^3 = -0.577
    np.testing.assert_allclose(score, math.log(0.5 * 0.8 * 0.8 * 0.6), rtol=1e-4)
    assert search(LENGTHS, num_steps=4, beam_size=4, length_penalty=1.0)[0] == ["red"]
    average, _ = search(LENGTHS, num_steps=4, beam_size=4, length_normalization=1.0)
    assert average == LONG  # -0.413 a token against -0.458


def test_ranking_is_wu_et_als_penalty_over_the_normalisation():
    scores = tf.constant([[-2.0, -3.0]])
    steps = tf.constant([[2, 4]])
    wu = ranking(scores, steps, BeamControls(length_penalty=0.6)).numpy()
    np.testing.assert_allclose(wu, [[-2.0 / (7 / 6) ** 0.6, -3.0 / (9 / 6) ** 0.6]], rtol=1e-6)
    average = ranking(scores, steps, BeamControls(length_normalization=1.0)).numpy()
    np.testing.assert_allclose(average, [[-1.0, -0.75]])


def test_nucleus_sampling_draws_only_from_the_top_p():
    from textgen.generation.samplers import NucleusSampler, make_sampler

    probabilities = tf.constant([[0.5, 0.3, 0.15, 0.05]] * 2000)
    seeds = [tf.constant([7, step]) for step in range(3)]
    for top_p, allowed in ((0.5, {0}), (0.75, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2})):
        drawn = set()
        for seed in seeds:
            drawn |= set(NucleusSampler(0, top_p).get_next_token(probabilities, seed).numpy())
        assert drawn == allowed, (top_p, drawn)
    # top_p 1 keeps every token; a top-k cut comes first.
    everything = NucleusSampler(0, 1.0).get_next_token(probabilities, seeds[0]).numpy()
    assert set(everything) == {0, 1, 2, 3}
    assert set(NucleusSampler(2, 0.99).get_next_token(probabilities, seeds[0]).numpy()) == {0, 1}
    # The shares drawn follow the kept probabilities, renormalised: 0.5 / 0.8 and 0.3 / 0.8.
    tokens = NucleusSampler(0, 0.8).get_next_token(probabilities, seeds[1]).numpy()
    assert abs(np.mean(tokens == 0) - 0.625) < 0.04
    assert isinstance(make_sampler(0.7, 0, 0.9), NucleusSampler)
    assert not isinstance(make_sampler(0.7, 5, 1.0), NucleusSampler)
