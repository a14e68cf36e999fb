"""Captions for encoder features with a trained Captioner, through textgen's one decoding loop.

Greedy by default; `beam_size` > 1 runs beam search, `temperature` > 0 samples.
"""

import numpy as np

from captioning.datasets.tokens import caption_text, decode_caption


def ids_to_captions(tokens, lengths, vocabulary):
    """Rows of generated ids (and their lengths before <end>) -> caption strings."""
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return [
        caption_text(decode_caption(row[:length], vocabulary))
        for row, length in zip(tokens, lengths)
    ]


def decode_features(
    model,
    features,
    vocabulary,
    max_length,
    beam_size=1,
    temperature=0.0,
    top_k=0,
    seed=0,
    allow_unknown=False,
    length_normalization=0.0,
    batch_size=256,
    controls=None,
    top_p=1.0,
):
    """(captions, log-probabilities) for encoder features [N, F], `batch_size` rows at a time;
    see `Captioner.caption` for the decoding arguments."""
    features = np.asarray(features, np.float32)
    captions, log_probs = [], []
    for start in range(0, len(features), batch_size):
        tokens, scores, lengths = model.caption(
            features[start : start + batch_size],
            max_length,
            beam_size,
            temperature,
            top_k,
            seed,
            allow_unknown,
            length_normalization,
            controls,
            top_p,
        )
        captions.extend(ids_to_captions(tokens, lengths, vocabulary))
        log_probs.extend(float(s) for s in scores)
    return captions, log_probs


def decode_n_best(
    model,
    features,
    vocabulary,
    max_length,
    beam_size,
    n_best,
    allow_unknown=False,
    length_normalization=0.0,
    batch_size=256,
    controls=None,
):
    """(captions [N][n_best], log-probabilities [N][n_best]) for encoder features [N, F]: the
    `n_best` best distinct beams of each image, best first (the first is `decode_features`'
    caption at the same beam size)."""
    features = np.asarray(features, np.float32)
    captions, log_probs = [], []
    for start in range(0, len(features), batch_size):
        tokens, scores, lengths = model.n_best(
            features[start : start + batch_size],
            max_length,
            beam_size,
            n_best,
            allow_unknown,
            length_normalization,
            controls,
        )
        for row_tokens, row_scores, row_lengths in zip(tokens, scores, lengths):
            captions.append(ids_to_captions(row_tokens, row_lengths, vocabulary))
            log_probs.append([float(s) for s in row_scores])
    return captions, log_probs


def caption_features(
    model,
    features,
    vocabulary,
    max_length,
    temperature=0.0,
    top_k=0,
    seed=0,
    allow_unknown=False,
    batch_size=256,
    beam_size=1,
):
    """Captions for precomputed encoder features [N, F] (e.g. from the feature cache)."""
    return decode_features(
        model,
        features,
        vocabulary,
        max_length,
        beam_size,
        temperature,
        top_k,
        seed,
        allow_unknown,
        batch_size=batch_size,
    )[0]
