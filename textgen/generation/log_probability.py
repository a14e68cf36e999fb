"""How likely a text is under a language model: total log-probability (nats), nats per token, bits
per character and perplexity.

A text is scored as generation reads it: from zero state, the prime (or the model's default
prime, a newline) fed first, then every token of the text predicted from all the tokens before
it, the state carried through the whole text. `LanguageModel.score` and `score_each` call
`score_text` and `score_texts`; the SavedModel's `score` signature runs `step_log_probs` on the
lean step.

A long text can be scored as B contiguous streams in one batch (`score_text(..., streams=B)`),
B times fewer sequential steps: stream k > 0 starts from zero state, fed only the token before
its piece, so the first few dozen tokens of each piece are predicted with less context than one
pass would give them. `streams=1` is the exact one-pass score.
"""

import math

import numpy as np
import tensorflow as tf

from textgen.corpus.vocabulary import END_OF_DOCUMENT
from textgen.errors import UsageError

# How many logits one sequence call may hold ([streams, time, vocabulary] floats), so that a
# word model's vocabulary does not take gigabytes for a long text.
LOGITS_PER_CALL = 8_000_000
MAX_CHUNK = 2048
# Auto streams (`streams=0`): one per this many tokens, at most MAX_STREAMS.
TOKENS_PER_STREAM = 10_000
MAX_STREAMS = 32


def auto_streams(num_tokens):
    return int(max(1, min(MAX_STREAMS, num_tokens // TOKENS_PER_STREAM)))


def summary(log_prob, tokens, characters):
    """The figures of one scored text, in their units; None where a figure needs at least one
    token or character."""
    return {
        "log_prob": float(log_prob),
        "tokens": int(tokens),
        "characters": int(characters),
        "nats_per_token": -log_prob / tokens if tokens else None,
        "bits_per_char": -log_prob / math.log(2) / characters if characters else None,
        "perplexity": math.exp(-log_prob / tokens) if tokens else None,
    }


def location(text, index):
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def encode(model, text, unknown="error", where="the text", line=None):
    """(ids int32 [N], skipped characters, unknown tokens): `text` as the model's token ids.

    Tokens outside a vocabulary without `<unk>` are an error naming the first one's line and
    column (`line` is the line number of a text that is one line of a file), or with
    `unknown="skip"` dropped and counted. A vocabulary with `<unk>` (word level) maps them to it,
    and they are counted."""
    vocabulary = model.vocabulary
    tokens = model.tokenize(text)
    skipped = 0
    if vocabulary.unknown_token is None:
        missing = vocabulary.unknown(tokens)
        if missing and unknown == "error":
            at_line, column = location(text, max(0, text.find(missing[0])))
            if line is not None:
                at_line = line
            shown = " ".join(repr(t) for t in missing[:20])
            raise UsageError(
                f"{where}: line {at_line}, column {column}: {missing[0]!r} is not in the model's "
                f"vocabulary ({len(missing)} distinct {model.unit}(s) outside it: {shown}); "
                "remove them or pass `unknown` skip"
            )
        if missing:
            kept = [t for t in tokens if t in vocabulary]
            skipped = sum(len(t) for t in tokens) - sum(len(t) for t in kept)
            tokens = kept
    ids = np.asarray(vocabulary.encode(tokens), np.int32)
    unknown_tokens = 0
    if vocabulary.unknown_token is not None:
        unknown_tokens = int(np.sum(ids == vocabulary.id(vocabulary.unknown_token)))
    return ids, skipped, unknown_tokens


def context_ids(model, prime, unknown="error"):
    """The ids fed before the text: the prime's, or the default prime's (as `sample` does).
    A conditioned model reads the text as a new document, as it samples one: after the
    end-of-document token, then the prime."""
    first = [model.vocabulary.id(model.default_prime())] if model.labels else []
    if prime:
        ids, _, _ = encode(model, prime, unknown, where="`prime`")
        if len(ids):
            return np.concatenate([first, ids]).astype(np.int32)
        raise UsageError(f"every {model.unit} of `prime` is outside the vocabulary")
    return np.asarray([model.vocabulary.id(model.default_prime())], np.int32)


def sum_log_probs(model, inputs, targets, mask, labels=None):
    """Sum over t of mask[b, t] * log p(targets[b, t] | inputs[b, :t + 1]), from zero state, in
    float64: [B]. Long rows run in pieces of time, the state carried from one to the next.
    `labels` [B] are the rows' label ids for a conditioned model."""
    if labels is not None:
        inputs = model.joint_ids(inputs, np.asarray(labels, np.int32)[:, None])
    batch, steps = inputs.shape
    chunk = int(max(16, min(MAX_CHUNK, LOGITS_PER_CALL // max(1, batch * model.vocabulary_size))))
    states = model.initial_states(batch)
    total = np.zeros(batch, np.float64)
    for start in range(0, steps, chunk):
        cut = slice(start, start + chunk)
        log_probs, states = model.token_log_probs(inputs[:, cut], targets[:, cut], states)
        total += np.sum(log_probs.numpy().astype(np.float64) * mask[:, cut], axis=1)
    return total


def pad(rows):
    """Rows of different lengths -> (int32 [B, T] padded with 0 at the end, float mask)."""
    steps = max(len(row) for row in rows)
    ids = np.zeros((len(rows), steps), np.int32)
    mask = np.zeros((len(rows), steps), np.float64)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
    return ids, mask


def stream_rows(sequence, context_length, streams):
    """(inputs, targets, mask) of `sequence` (context + text ids) as `streams` contiguous
    pieces of the text: stream 0 starts from the context, stream k > 0 from the token before
    its piece; each is fed from zero state, and only text tokens are scored."""
    num_tokens = len(sequence) - context_length
    bounds = [context_length + k * num_tokens // streams for k in range(streams + 1)]
    inputs, targets, scored = [], [], []
    for k in range(streams):
        start = 0 if k == 0 else bounds[k] - 1
        end = bounds[k + 1]
        inputs.append(sequence[start : end - 1])
        targets.append(sequence[start + 1 : end])
        # Position j predicts sequence[start + 1 + j]; the context's own tokens are not scored.
        scored.append(np.arange(start + 1, end) >= context_length)
    inputs, mask = pad(inputs)
    targets, _ = pad(targets)
    scored, _ = pad(scored)
    return inputs, targets, mask * scored


def score_text(model, text, prime=None, unknown="error", streams=1, where="the text", labels=None):
    """The score of `text` read in one pass (see the module docstring), or in `streams`
    contiguous streams (0: one per 10,000 tokens, at most 32). A dict: `summary` plus
    unknown_tokens, skipped (characters) and streams. `labels`: [1] label id of a
    conditioned model."""
    ids, skipped, unknown_tokens = encode(model, text, unknown, where)
    if not len(ids):
        raise UsageError(
            f"{where} has no {model.unit} inside the model's vocabulary: nothing to score"
        )
    context = context_ids(model, prime, unknown)
    streams = auto_streams(len(ids)) if streams == 0 else min(int(streams), len(ids))
    inputs, targets, mask = stream_rows(np.concatenate([context, ids]), len(context), streams)
    if labels is not None:
        labels = np.repeat(np.asarray(labels, np.int32)[:1], len(inputs))
    log_prob = float(np.sum(sum_log_probs(model, inputs, targets, mask, labels)))
    result = summary(log_prob, len(ids), len(text) - skipped)
    result.update(unknown_tokens=unknown_tokens, skipped=skipped, streams=streams)
    return result


def score_texts(
    model,
    texts,
    prime=None,
    unknown="error",
    batch_size=64,
    where="the text",
    documents=False,
    labels=None,
):
    """The score of each of `texts` on its own, from zero state after the prime, `batch_size`
    texts per batch; a list of dicts, each `summary` plus text, unknown_tokens and skipped. A
    text with no tokens scores 0 nats over 0 tokens. Text i is line i + 1 in error messages.

    With `documents` (and a model trained on several documents), each text is a document, read
    as training read one: after the end-of-document token (then the prime, if one is given),
    and closed by an end token that is scored too, so its log-probability is that of the
    whole document, its length included. The end token counts as a token and as one
    character, as in training's validation figures. Text i is document i + 1 in errors.
    `labels` [len(texts)] are the label ids a conditioned model scores each text under."""
    if batch_size <= 0:
        raise UsageError(f"`batch_size` must be a positive integer, got {batch_size}")
    end = None
    if documents and END_OF_DOCUMENT in model.vocabulary:
        end = model.vocabulary.id(END_OF_DOCUMENT)
        context = np.asarray([end], np.int32)
        if model.labels:  # its context starts with the end token already
            context = context_ids(model, prime, unknown)
        elif prime:
            context = np.concatenate([context, context_ids(model, prime, unknown)])
    else:
        context = context_ids(model, prime, unknown)
    if documents:
        encoded = [
            encode(model, text, unknown, f"{where}, document {i + 1}")
            for i, text in enumerate(texts)
        ]
    else:
        encoded = [encode(model, text, unknown, where, line=i + 1) for i, text in enumerate(texts)]
    if end is not None:
        encoded = [
            (np.append(ids, end).astype(np.int32), skipped, unknown_tokens)
            for ids, skipped, unknown_tokens in encoded
        ]
    log_probs = np.zeros(len(texts), np.float64)
    # Rows of like length share a batch, so little of it is padding.
    order = [i for i in np.argsort([len(ids) for ids, _, _ in encoded], kind="stable")]
    order = [i for i in order if len(encoded[i][0])]
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        sequences = [np.concatenate([context, encoded[i][0]]) for i in rows]
        inputs, mask = pad([s[:-1] for s in sequences])
        targets, _ = pad([s[1:] for s in sequences])
        mask[:, : len(context) - 1] = 0  # the context predicting itself
        row_labels = None if labels is None else np.asarray(labels)[rows]
        log_probs[rows] = sum_log_probs(model, inputs, targets, mask, row_labels)
    results = []
    ends = 0 if end is None else 1  # the end token, one character
    for text, (ids, skipped, unknown_tokens), log_prob in zip(texts, encoded, log_probs):
        result = {"text": text, **summary(log_prob, len(ids), len(text) - skipped + ends)}
        result.update(unknown_tokens=unknown_tokens, skipped=skipped)
        results.append(result)
    return results


# ---- in a graph: the SavedModel's `score` signature ----


def step_log_probs(step_fn, inputs, targets, lengths, states):
    """Sum over t < lengths[b] of log p(targets[b, t]) after feeding inputs[b, t] to `step_fn`
    (tokens [B] -> (logits [B, V], states)) from `states`, one step at a time; all TensorFlow
    ops. inputs and targets are int32 [B, T]; returns float32 [B]."""
    batch, steps = tf.shape(inputs)[0], tf.shape(inputs)[1]

    def body(t, states, total):
        logits, states = step_fn(inputs[:, t], states)
        nats = tf.nn.sparse_softmax_cross_entropy_with_logits(
            targets[:, t], tf.cast(logits, tf.float32)
        )
        return t + 1, states, total - tf.where(t < lengths, nats, 0.0)

    _, _, total = tf.while_loop(
        lambda t, *_: t < steps, body, (0, list(states), tf.zeros([batch], tf.float32))
    )
    return total
