"""`python -m captioning.evaluate`: caption a data set's images and score them.

`python -m captioning.evaluate --model M --annotations captions_val.json --images DIR` captions
every image through `caption_model.caption_files` (beam search), optionally writes the COCO
results file `[{"image_id", "caption"}]`, and prints the seven COCO metrics
(`captioning.metrics.coco_metrics.coco_metrics`) and, for shapes scenes, the share of captions that
parse to the right scene.
"""

import dataclasses
import json
import os
import sys

from captioning.inference.decoding_flags import decode_options, decoding_field
from captioning.metrics.coco_metrics import (
    coco_metrics,
    correct_share,
    format_coco_metrics,
)
from textgen import cli
from textgen.errors import UsageError, cli_errors


@dataclasses.dataclass
class EvaluateConfig:
    annotations: str = dataclasses.field(
        metadata={
            "metavar": "JSON",
            "help": "reference captions: a COCO captions_*.json (or a Karpathy dataset_*.json, see "
            "--split)",
        }
    )
    images: str = dataclasses.field(
        metadata={
            "metavar": "DIR",
            "help": "directory that the image file names in --annotations are relative to",
        }
    )
    model: str | None = dataclasses.field(
        default=None,
        metadata={
            "metavar": "RUN_DIR_OR_SAVEDMODEL",
            "default_help": "the bundled shapes model in data/models/shapes",
            "help": "a captioning.train run directory or a captioning.export SavedModel",
        },
    )
    results: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "JSON",
            "default_help": "not written",
            "help": "write the captions here as a COCO results file, a JSON list of "
            '{"image_id", "caption"}',
        },
    )
    split: str = dataclasses.field(
        default="test",
        metadata={
            "help": "for a Karpathy file: the split to evaluate, val, test, train or restval; "
            "ignored for COCO files"
        },
    )
    beam_size: int = decoding_field("beam_size")
    max_length: int = decoding_field("max_length")
    length_penalty: float = decoding_field("length_penalty")
    length_normalization: float = decoding_field("length_normalization")
    block_repeat_ngrams: int = decoding_field("block_repeat_ngrams")
    no_repeat_words: bool = decoding_field("no_repeat_words")
    bad_endings: bool = decoding_field("bad_endings")
    diverse_groups: int = decoding_field("diverse_groups")
    diversity: float = decoding_field("diversity")
    temperature: float = decoding_field("temperature")
    top_k: int = decoding_field("top_k")
    top_p: float = decoding_field("top_p")
    seed: int = decoding_field("seed")
    batch_size: int = dataclasses.field(default=32, metadata={"help": "images captioned together"})
    max_images: int = dataclasses.field(
        default=0,
        metadata={
            "metavar": "N",
            "default_help": "0, all",
            "help": "evaluate only the first N images of the file",
        },
    )


def build_parser():
    return cli.build_parser(
        EvaluateConfig,
        "python -m captioning.evaluate",
        "Caption every image of a caption data set with beam search and score the captions "
        "against the references: BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap, PTB "
        "tokenizer; METEOR and the tokenizer need Java), and for the synthetic shapes scenes "
        "the share of correct captions.",
    )


def write_results(path, entries):
    """The COCO results file `[{"image_id", "caption"}]`, written atomically."""
    from textgen.io import atomic_write_text

    atomic_write_text(path, json.dumps(entries, indent=1, ensure_ascii=False) + "\n")


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
    from captioning.coco_data import read_captions
    from captioning.inference.loading import caption_files, load_caption_model

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def log(message):
        print(message, file=err, flush=True)

    options = decode_options(config)
    options.check()
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {config.batch_size}")
    if config.max_images < 0:
        raise UsageError(f"--max-images must be >= 0 (0 means all), got {config.max_images}")
    if config.results:
        check_results_path(config.results)
    records = read_captions(config.annotations, config.images, config.split, log=log)
    if config.max_images:
        records = records[: config.max_images]
    model = load_caption_model(config.model)

    unreadable = []

    def on_error(error):
        unreadable.append(error)
        log(f"skipped image {error}")

    results = iter(
        caption_files([r.path for r in records], model, options, config.batch_size, on_error)
    )
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
        write_results(config.results, entries)
    metrics = coco_metrics(
        {r.image_id: r.captions for r, _ in pairs}, {r.image_id: c for r, c in pairs}, log=log
    )
    correct = None
    if all(r.scene is not None for r, _ in pairs):
        correct = correct_share([c for _, c in pairs], [r.scene for r, _ in pairs])

    skipped = f", {len(unreadable)} skipped (unreadable)" if unreadable else ""
    how = (
        f"temperature {config.temperature:g}"
        if config.temperature > 0
        else f"beam {config.beam_size}"
    )
    print(f"{len(pairs)} images captioned ({how}){skipped}", file=out)
    print(format_coco_metrics(metrics), file=out)
    if correct is not None:
        right = round(correct * len(pairs))
        print(
            f"correct  {correct:.1%} ({right} of {len(pairs)} captions parse to the image's scene)",
            file=out,
        )
    if config.results:
        print(f"wrote {config.results}", file=out)
    out.flush()
    return {
        "images": len(pairs),
        "skipped": len(unreadable),
        "metrics": metrics,
        "correct": correct,
    }


@cli_errors
def main(argv=None):
    config = EvaluateConfig(**vars(build_parser().parse_args(argv)))
    evaluate(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
