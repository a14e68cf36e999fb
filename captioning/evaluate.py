"""Scoring generated captions, and `python -m captioning.evaluate`.

Two ways to score:

- `score_captions` (used by training on its validation images): exact correctness on shapes
  scenes, BLEU-4 and CIDEr on the project's tokenisation (`captioning.captions.tokenize`:
  lowercase, punctuation split off, trailing period dropped, joined with spaces). No Java, fast.
- `coco_metrics` (used by the CLI): the COCO caption evaluation, as pycocoevalcap's
  `COCOEvalCap.evaluate` does it minus SPICE (whose set-up downloads models): references and
  captions through its PTBTokenizer, then `Bleu(4)`, `Meteor()`, `Rouge()` and `Cider()`.
  PTBTokenizer and METEOR are Java programs. Without Java (no `java` on PATH, or the tokenizer
  does not run) it falls back to BLEU, ROUGE-L and CIDEr on the project's tokenisation and says
  so in one warning; if only METEOR fails to start, METEOR alone is skipped, with a warning.

`python -m captioning.evaluate --model M --annotations captions_val.json --images DIR` captions
every image through `caption_model.caption_files` (beam search), optionally writes the COCO
results file `[{"image_id", "caption"}]`, and prints the seven metrics and, for shapes scenes,
the share of captions that parse to the right scene.
"""

import contextlib
import dataclasses
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np

from captioning.captions import tokenize
from captioning.scene_parser import caption_is_correct
from textgen.cli import ArgumentParser
from textgen.errors import UsageError, cli_errors

# pycocoevalcap's metric keys -> the names printed.
METRIC_NAMES = {"Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3", "Bleu_4": "BLEU-4",
                "METEOR": "METEOR", "ROUGE_L": "ROUGE-L", "CIDEr": "CIDEr"}


class JavaUnavailable(Exception):
    """A Java scorer (PTBTokenizer or METEOR) could not run; the message says why."""


def find_java():
    """The `java` executable pycocoevalcap will run, or None."""
    return shutil.which("java")


def warn(message):
    print(message, file=sys.stderr, flush=True)


def _tokenized(text):
    return " ".join(tokenize(text))


def python_tokenize(texts):
    """{key: [text]} -> {key: [space-joined captioning.captions.tokenize tokens]}."""
    return {key: [_tokenized(t) for t in values] for key, values in texts.items()}


def require_pycocoevalcap():
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise UsageError("scoring captions needs pycocoevalcap: pip install 'textgen-captioning[eval]' "
                         "(or pip install pycocoevalcap)") from None


def ptb_tokenize(texts):
    """{key: [text]} -> {key: [tokens]} through pycocoevalcap's PTBTokenizer (Stanford CoreNLP,
    lowercased, punctuation removed), in one Java run. JavaUnavailable if it does not run."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    # One caption per line: any whitespace (\r, \u2028 ...) would split a line in Java.
    lines = {key: [{"caption": " ".join(t.split())} for t in values] for key, values in texts.items()}
    # The tokenizer reports "PTBTokenizer tokenized N tokens ..." on stderr; keep the output clean.
    original = ptbtokenizer.subprocess
    ptbtokenizer.subprocess = types.SimpleNamespace(
        PIPE=subprocess.PIPE, Popen=functools.partial(subprocess.Popen, stderr=subprocess.DEVNULL))
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


def coco_metrics(references, captions, log=warn):
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
    texts = {**{("ref", i): list(references[i]) for i in ids}, **{("res", i): [captions[i]] for i in ids}}
    try:
        if find_java() is None:
            raise JavaUnavailable("no `java` on PATH")
        tokenized, java = ptb_tokenize(texts), True
    except JavaUnavailable as error:
        log(f"warning: {error}: METEOR skipped, and BLEU, ROUGE-L and CIDEr computed on "
            "captioning.captions.tokenize instead of the PTB tokenizer (install Java for the "
            "standard COCO metrics)")
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


def format_metrics(scores):
    """One line per metric, COCO's names: 'BLEU-1   0.812'."""
    return "\n".join(f"{METRIC_NAMES[key]:<8} {scores[key]:.3f}" for key in METRIC_NAMES if key in scores)


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


# ---------------------------------------------------------------------------------------------
# CLI


@dataclasses.dataclass
class EvaluateConfig:
    annotations: str                  # COCO captions_*.json (or Karpathy dataset_*.json with --split)
    images: str                       # directory the file names are relative to
    model: str | None = None          # run directory or SavedModel (None: the bundled model)
    results: str = ""                 # write the COCO results JSON here (empty: don't)
    split: str = "test"               # Karpathy files only: which split to evaluate
    beam_size: int = 3                # beams per image (1: greedy)
    max_length: int = 20              # most words per caption
    batch_size: int = 32              # images captioned together
    max_images: int = 0               # evaluate only the first N images (0: all)


def build_parser():
    parser = ArgumentParser(
        prog="python -m captioning.evaluate",
        description="Caption every image of a caption data set with beam search and score the "
                    "captions against the references: BLEU-1..4, METEOR, ROUGE-L and CIDEr "
                    "(pycocoevalcap, PTB tokenizer; METEOR and the tokenizer need Java), and "
                    "for the synthetic shapes scenes the share of correct captions.")
    parser.add_argument("--annotations", required=True, metavar="JSON",
                        help="reference captions: a COCO captions_*.json (or a Karpathy "
                             "dataset_*.json, see --split) (required)")
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="directory that the image file names in --annotations are relative to (required)")
    parser.add_argument("--model", metavar="RUN_DIR_OR_SAVEDMODEL",
                        help="a captioning.train run directory or a captioning.export SavedModel "
                             "(default: the bundled shapes model in data/models/shapes)")
    parser.add_argument("--results", default="", metavar="JSON",
                        help="write the captions here as a COCO results file, a JSON list of "
                             "{\"image_id\", \"caption\"} (default: not written)")
    parser.add_argument("--split", default="test",
                        help="for a Karpathy file: the split to evaluate, val, test, train or "
                             "restval; ignored for COCO files (default: test)")
    parser.add_argument("--beam-size", type=int, default=3, help="beams per image; 1 is greedy decoding (default: 3)")
    parser.add_argument("--max-length", type=int, default=20, help="most words per caption (default: 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="images captioned together (default: 32)")
    parser.add_argument("--max-images", type=int, default=0, metavar="N",
                        help="evaluate only the first N images of the file (default: 0, all)")
    return parser


def check_results_path(path):
    """UsageError now, not after captioning thousands of images, if `path` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"--results {path} is a directory; pass a file name such as results.json")
    if not os.path.isdir(directory):
        raise UsageError(f"--results {path}: directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"--results {path}: directory {directory} is not writable")


def evaluate(config, out=None, err=None):
    """Captions and scores the images of `config.annotations`; prints the scores and returns
    {"images", "skipped", "metrics": {pycocoevalcap key: score}, "correct": share or None}."""
    from captioning.caption_model import DecodeOptions, caption_files, load_caption_model
    from captioning.coco_data import read_captions
    from textgen.io import atomic_write_text

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def log(message):
        print(message, file=err, flush=True)

    options = DecodeOptions(beam_size=config.beam_size, max_length=config.max_length)
    options.check()
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {config.batch_size}")
    if config.max_images < 0:
        raise UsageError(f"--max-images must be >= 0 (0 means all), got {config.max_images}")
    if config.results:
        check_results_path(config.results)
    records = read_captions(config.annotations, config.images, config.split, log=log)
    if config.max_images:
        records = records[:config.max_images]
    model = load_caption_model(config.model)

    unreadable = []

    def on_error(error):
        unreadable.append(error)
        log(f"skipped image {error}")

    results = iter(caption_files([r.path for r in records], model, options, config.batch_size, on_error))
    # caption_files keeps the order and leaves out only the unreadable files.
    pairs, result = [], next(results, None)
    for record in records:
        if result is not None and result.file == os.fspath(record.path):
            pairs.append((record, result.caption))
            result = next(results, None)
    if not pairs:
        raise UsageError(f"none of the {len(records)} images could be read (see the lines above)")

    if config.results:
        entries = [{"image_id": r.image_id, "caption": c} for r, c in pairs]
        atomic_write_text(config.results, json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    metrics = coco_metrics({r.image_id: r.captions for r, _ in pairs},
                           {r.image_id: c for r, c in pairs}, log=log)
    correct = None
    if all(r.scene is not None for r, _ in pairs):
        correct = correct_share([c for _, c in pairs], [r.scene for r, _ in pairs])

    skipped = f", {len(unreadable)} skipped (unreadable)" if unreadable else ""
    print(f"{len(pairs)} images captioned (beam {config.beam_size}){skipped}", file=out)
    print(format_metrics(metrics), file=out)
    if correct is not None:
        right = round(correct * len(pairs))
        print(f"correct  {correct:.1%} ({right} of {len(pairs)} captions parse to the image's scene)", file=out)
    if config.results:
        print(f"wrote {config.results}", file=out)
    out.flush()
    return {"images": len(pairs), "skipped": len(unreadable), "metrics": metrics, "correct": correct}


@cli_errors
def main(argv=None):
    config = EvaluateConfig(**vars(build_parser().parse_args(argv)))
    evaluate(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
