"""What a user can ask of beam search beyond the most probable sequence: a length penalty, no
repeated n-grams or words, no dangling last word, and diverse groups of beams.

The controls users of captioners ask for (self-critical.pytorch's `opts.py`, OpenNMT #745,
allennlp #5205). Each one acts inside the search, as a constraint on the beams, not as a filter
on finished sequences: a filter can only choose among what the search kept, and the search keeps
what the constraint forbids. Every field may be a tensor, so an exported SavedModel takes them
as inputs; the defaults leave beam search exactly as it is without them.

- `length_penalty` alpha: finished sequences are ranked by log_prob / ((5 + length) / 6)**alpha
  (Wu et al. 2016, GNMT). `length_normalization` alpha ranks by log_prob / length**alpha; with
  alpha 1 that is the average log-probability per token. Both count the end token as one step
  of length; give one of them.
- `block_repeat_ngrams` N: no beam contains an n-gram of N tokens twice (N = 3 is the
  "trigram blocking" of captioning and summarisation papers).
- `no_repeat_words`: no token twice, except those `repeatable` marks (function words such as
  "a", "the", "and", which a caption of several objects needs more than once).
- `bad_endings`: a beam may not end right after a token that `bad_ending_tokens` marks ("a",
  "with", "the", ...): the end token is forbidden after them, and on the step before the last
  (after which the sequence must end) they are forbidden themselves.
- `diverse_groups` G, `diversity` lambda: diverse beam search (Vijayakumar et al. 2016, Hamming
  diversity). The beams form G groups of beam_size / G; at each step the groups choose in turn,
  and a token the earlier groups chose at this step costs lambda nats per time chosen. With G 1
  it is plain beam search.
"""

import dataclasses

import tensorflow as tf

# A log-probability that rules a token out, as beam search's own forbidden tokens are.
RULED_OUT = -1e9


@dataclasses.dataclass
class BeamControls:
    length_penalty: float = 0.0
    length_normalization: float = 0.0
    block_repeat_ngrams: int = 0
    no_repeat_words: bool = False
    diverse_groups: int = 1
    diversity: float = 0.0
    bad_endings: bool = False
    # bool [vocab] masks, fixed by the vocabulary: tokens `no_repeat_words` lets repeat, and the
    # tokens a sequence may not end after (used only when `bad_endings` is true).
    repeatable: object = None
    bad_ending_tokens: object = None


def ranking(scores, steps, controls):
    """The score finished sequences are ranked by: log-probabilities `scores` over the length
    penalty or normalisation of `steps` (tokens, the end token counted)."""
    steps = tf.maximum(tf.cast(steps, tf.float32), 1.0)
    wu = tf.pow((5.0 + steps) / 6.0, tf.cast(controls.length_penalty, tf.float32))
    plain = tf.pow(steps, tf.cast(controls.length_normalization, tf.float32))
    return scores / (wu * plain)


def constrained_log_probs(log_probs, history, t, num_steps, end_token, controls):
    """`log_probs` [batch, beams, vocab] of the next token with the tokens the controls forbid
    set to RULED_OUT. `history` [batch, beams, num_steps] holds each beam's tokens, the first
    `t` of them generated so far."""
    vocabulary = tf.shape(log_probs)[-1]
    banned = tf.zeros(tf.shape(log_probs), tf.bool)
    banned |= tf.cond(
        tf.cast(controls.block_repeat_ngrams, tf.int32) > 0,
        lambda: repeated_ngram_ends(history, t, controls.block_repeat_ngrams, vocabulary),
        lambda: tf.zeros(tf.shape(log_probs), tf.bool),
    )
    if controls.repeatable is not None:
        used = tokens_used(history, t, vocabulary)
        banned |= tf.convert_to_tensor(controls.no_repeat_words, tf.bool) & (
            used & ~controls.repeatable[None, None]
        )
    if controls.bad_ending_tokens is not None:
        on = tf.convert_to_tensor(controls.bad_endings, tf.bool)
        last = tf.gather(history, tf.maximum(t - 1, 0), axis=2)
        dangling = (t > 0) & tf.gather(controls.bad_ending_tokens, last)
        # The last step has to end (a captioner forces it at its word limit), so the step
        # before it may not take a bad ending, and the end is never banned on the last step.
        dangling &= on & (t < num_steps - 1)
        banned |= dangling[:, :, None] & (tf.range(vocabulary) == end_token)[None, None]
        banned |= (on & tf.equal(t, num_steps - 2)) & controls.bad_ending_tokens[None, None]
    return tf.where(banned, tf.constant(RULED_OUT, log_probs.dtype), log_probs)


def tokens_used(history, t, vocabulary):
    """bool [batch, beams, vocab]: the tokens among each beam's first `t`."""
    generated = tf.range(tf.shape(history)[2]) < t
    return mark(history, tf.broadcast_to(generated[None, None], tf.shape(history)), vocabulary)


def mark(tokens, where, vocabulary):
    """bool [batch, beams, vocab]: the tokens of `tokens` [batch, beams, length] at the
    positions `where` marks. A segment sum, not a one-hot: [batch, beams, length, vocab] would
    take tens of megabytes a step with a real vocabulary."""
    shape = tf.shape(tokens)
    rows = shape[0] * shape[1]
    row = tf.broadcast_to(tf.range(rows)[:, None], [rows, shape[2]])
    index = row * vocabulary + tf.reshape(tokens, [rows, shape[2]])
    counts = tf.math.unsorted_segment_sum(
        tf.reshape(tf.cast(where, tf.int32), [-1]), tf.reshape(index, [-1]), rows * vocabulary
    )
    return tf.reshape(counts > 0, [shape[0], shape[1], vocabulary])


def repeated_ngram_ends(history, t, n, vocabulary):
    """bool [batch, beams, vocab]: the tokens that would complete, as the beam's next token, an
    n-gram that its first `t` tokens already hold. A beam's last n - 1 tokens are compared with
    every earlier window of n - 1; where one matches, the token that followed it is banned."""
    n = tf.cast(n, tf.int32)
    length = tf.shape(history)[2]
    context = tf.maximum(n - 1, 0)  # traced for n 0 too, in the branch that does not run
    starts = tf.range(length)
    # Window j covers positions j .. j + n - 2 and is followed by position j + n - 1.
    window = tf.minimum(starts[:, None] + tf.range(context)[None, :], length - 1)
    windows = tf.gather(history, window, axis=2)  # [batch, beams, length, n - 1]
    recent = tf.gather(history, tf.maximum(t - context + tf.range(context), 0), axis=2)
    matches = tf.reduce_all(tf.equal(windows, recent[:, :, None, :]), axis=-1)
    matches &= (starts + context < t)[None, None] & (t >= context)
    following = tf.gather(history, tf.minimum(starts + context, length - 1), axis=2)
    return mark(following, matches, vocabulary)


def word_mask(vocabulary_tokens, words):
    """bool [vocab] constant: the tokens that are one of `words`."""
    words = set(words)
    return tf.constant([token in words for token in vocabulary_tokens])
