"""Scores of generated captions: the COCO caption metrics, and training's quick scores.

Two ways to score:

- `score_captions` (training, on its validation images): exact correctness on shapes scenes
  (`captioning.metrics.scene_parser`), BLEU-4 and CIDEr on the project's tokenisation
  (`captioning.datasets.tokens.tokenize`: lowercase, punctuation split off, trailing period dropped,
  joined with spaces). No Java, fast.
- `coco_metrics` (`python -m captioning.evaluate`): the COCO caption evaluation, as
  pycocoevalcap's `COCOEvalCap.evaluate` does it minus SPICE (whose set-up downloads models):
  references and captions through its PTBTokenizer, then `Bleu(4)`, `Meteor()`, `Rouge()` and
  `Cider()`. PTBTokenizer and METEOR are Java programs. Without Java (no `java` on PATH, or the
  tokenizer does not run) it falls back to BLEU, ROUGE-L and CIDEr on the project's tokenisation
  and says so in one warning; if only METEOR fails to start, METEOR alone is skipped, with a
  warning.

Only formulas live here, no model and no CLI, so that training and the evaluate CLI can both
import them without importing each other.
"""

import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import types

import numpy as np

from captioning.datasets.tokens import tokenize
from captioning.metrics.scene_parser import caption_is_correct
from textgen.errors import UsageError

# pycocoevalcap's metric keys -> the names printed.
METRIC_NAMES = {
    "Bleu_1": "BLEU-1",
    "Bleu_2": "BLEU-2",
    "Bleu_3": "BLEU-3",
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "CIDEr": "CIDEr",
}


class JavaUnavailable(Exception):
    """A Java scorer (PTBTokenizer or METEOR) could not run; the message says why."""


def find_java():
    """The `java` executable pycocoevalcap will run, or None."""
    return shutil.which("java")


def log_to_stderr(message):
    print(message, file=sys.stderr, flush=True)


def _tokenized(text):
    return " ".join(tokenize(text))


def python_tokenize(texts):
    """{key: [text]} -> {key: [space-joined captioning.datasets.tokens.tokenize tokens]}."""
    return {key: [_tokenized(t) for t in values] for key, values in texts.items()}


def require_pycocoevalcap():
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise UsageError(
            "scoring captions needs pycocoevalcap: pip install "
            "'textgen-captioning[eval]' (or pip install pycocoevalcap)"
        ) from None


def ptb_tokenize(texts):
    """{key: [text]} -> {key: [tokens]} through pycocoevalcap's PTBTokenizer (Stanford CoreNLP,
    lowercased, punctuation removed), in one Java run. JavaUnavailable if it does not run."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    # One caption per line: any whitespace (\r, \u2028 ...) would split a line in Java.
    lines = {
        key: [{"caption": " ".join(t.split())} for t in values] for key, values in texts.items()
    }
    # The tokenizer reports "PTBTokenizer tokenized N tokens ..." on stderr; keep the output clean.
    original = ptbtokenizer.subprocess
    ptbtokenizer.subprocess = types.SimpleNamespace(
        PIPE=subprocess.PIPE, Popen=functools.partial(subprocess.Popen, stderr=subprocess.DEVNULL)
    )
    try:
        tokenized = ptbtokenizer.PTBTokenizer().tokenize(lines)
    except OSError as error:  # no java, or its temporary file cannot be written beside the jar
        raise JavaUnavailable(f"the PTB tokenizer did not run ({error})") from None
    finally:
        ptbtokenizer.subprocess = original
    if any(len(tokenized.get(key, ())) != len(values) for key, values in texts.items()):
        raise JavaUnavailable("the PTB tokenizer (Java) gave no output")
    return tokenized


def meteor_score(references, captions):
    """pycocoevalcap's METEOR 1.5 (a Java process) over {id: [tokens]} and {id: [tokens]}."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        meteor = Meteor()
    except OSError as error:
        raise JavaUnavailable(f"METEOR did not start ({error})") from None
    # "|||" separates the fields of METEOR's input lines; it strips it from captions only.
    references = {i: [r.replace("|||", "") for r in refs] for i, refs in references.items()}
    try:
        score, _ = meteor.compute_score(references, captions)
        return float(score)
    except (OSError, ValueError) as error:  # the JVM died: broken pipe, or an empty reply
        raise JavaUnavailable(f"METEOR (Java) stopped answering ({error or 'no output'})") from None
    finally:
        if meteor.lock.locked():  # compute_score keeps it on failure, and Meteor.__del__ takes it
            meteor.lock.release()
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


def coco_metrics(references, captions, log=log_to_stderr):
    """The COCO caption metrics of `captions` {image_id: caption} against `references`
    {image_id: [reference captions]}: {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr": float};
    a metric that could not be computed (METEOR without Java) is left out and `log` says why."""
    require_pycocoevalcap()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = list(captions)
    if not ids:
        raise ValueError("no captions to score")
    texts = {
        **{("ref", i): list(references[i]) for i in ids},
        **{("res", i): [captions[i]] for i in ids},
    }
    try:
        if find_java() is None:
            raise JavaUnavailable("no `java` on PATH")
        tokenized, java = ptb_tokenize(texts), True
    except JavaUnavailable as error:
        log(
            f"warning: {error}: METEOR skipped, and BLEU, ROUGE-L and CIDEr computed on "
            "captioning.datasets.tokens.tokenize instead of the PTB tokenizer (install Java for "
            "the standard COCO metrics)"
        )
        tokenized, java = python_tokenize(texts), False
    gts = {i: tokenized[("ref", i)] for i in ids}
    res = {i: tokenized[("res", i)] for i in ids}

    scores = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n}": float(b) for n, b in enumerate(bleu, 1)})
    if java:
        try:
            scores["METEOR"] = meteor_score(gts, res)
        except JavaUnavailable as error:
            log(f"warning: {error}: METEOR skipped")
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


def format_coco_metrics(scores):
    """One line per metric, COCO's names: 'BLEU-1   0.812'."""
    return "\n".join(
        f"{METRIC_NAMES[key]:<8} {scores[key]:.3f}" for key in METRIC_NAMES if key in scores
    )


# ---------------------------------------------------------------------------------------------
# Training's quick scores (no Java): correctness, BLEU-4, CIDEr


def bleu_cider(captions, references):
    """BLEU-4 and CIDEr (pycocoevalcap) of `captions` [N strings] against `references`
    [N lists of strings], on the project's tokenisation."""
    require_pycocoevalcap()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    results = python_tokenize({i: [c] for i, c in enumerate(captions)})
    truths = python_tokenize(dict(enumerate(references)))
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(truths, results, verbose=0)
        cider, _ = Cider().compute_score(truths, results)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


def correct_flags(captions, scenes):
    """For each caption, whether it names every object's size, colour and shape and the
    relation of its shapes scene correctly (`caption_is_correct`)."""
    return [bool(caption_is_correct(c, s)) for c, s in zip(captions, scenes)]


def correct_share(captions, scenes):
    """The share of captions that `correct_flags` finds correct."""
    return float(np.mean(correct_flags(captions, scenes)))


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
    """`score_captions`'s scores on one line: '12 images, correct 75.0%, BLEU-4 0.512, ...'."""
    parts = [f"{scores['images']} images"]
    if scores.get("correct") is not None:
        parts.append(f"correct {scores['correct']:.1%}")
    parts.append(f"BLEU-4 {scores['bleu4']:.3f}")
    parts.append(f"CIDEr {scores['cider']:.3f}")
    return ", ".join(parts)


def evaluation_document(captions, records, global_step):
    """What training writes to RUN_DIR/eval.json: the scores of `captions` (one per record),
    and each caption beside its image, its references and whether it is correct (shapes
    scenes; None elsewhere)."""
    scores = score_captions(captions, records)
    correct = (
        [None] * len(records)
        if scores["correct"] is None
        else correct_flags(captions, [r.scene for r in records])
    )
    return {
        "scores": scores,
        "global_step": global_step,
        "captions": [
            {
                "image_id": r.image_id,
                "file": os.path.basename(r.path),
                "caption": c,
                "correct": ok,
                "references": r.captions,
            }
            for r, c, ok in zip(records, captions, correct)
        ],
    }
