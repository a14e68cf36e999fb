"""Scoring generated captions: exact correctness on shapes scenes, BLEU-4 and CIDEr.

Captions and references are tokenised with the project's caption tokenizer
(`captioning.captions.tokenize`: lowercase, punctuation split off, trailing period dropped) and
joined with spaces before pycocoevalcap's `Bleu(4)` and `Cider` score them (the same scorers the
COCO caption evaluation uses; its PTBTokenizer needs Java and gives the same tokens on these
captions).
"""

import contextlib
import io

import numpy as np

from captioning.captions import tokenize
from captioning.scene_parser import caption_is_correct


def _tokenized(text):
    return " ".join(tokenize(text))


def bleu_cider(captions, references):
    """BLEU-4 and CIDEr (pycocoevalcap) of `captions` [N strings] against `references`
    [N lists of strings]."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    results = {i: [_tokenized(c)] for i, c in enumerate(captions)}
    truths = {i: [_tokenized(r) for r in refs] for i, refs in enumerate(references)}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(truths, results, verbose=0)
        cider, _ = Cider().compute_score(truths, results)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


def correct_share(captions, scenes):
    """The share of captions that name every object's size, colour and shape and the relation
    correctly (`caption_is_correct`)."""
    return float(np.mean([caption_is_correct(c, s) for c, s in zip(captions, scenes)]))


def score_captions(captions, records):
    """{"images", "correct" (None unless every record has a shapes scene), "bleu4", "cider"}
    for one generated caption per `CaptionRecord`."""
    if len(captions) != len(records) or not records:
        raise ValueError("need one caption per record, and at least one")
    scores = {"images": len(records), "correct": None}
    if all(r.scene is not None for r in records):
        scores["correct"] = correct_share(captions, [r.scene for r in records])
    scores.update(bleu_cider(captions, [r.captions for r in records]))
    return scores


def format_scores(scores):
    parts = [f"{scores['images']} images"]
    if scores.get("correct") is not None:
        parts.append(f"correct {scores['correct']:.1%}")
    parts.append(f"BLEU-4 {scores['bleu4']:.3f}")
    parts.append(f"CIDEr {scores['cider']:.3f}")
    return ", ".join(parts)
