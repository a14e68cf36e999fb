"""Caption images: `python -m captioning.caption IMAGE [IMAGE ...]`.

Prints one line per image, the path, a tab, then the caption. Without --model it uses the small
model shipped in data/models/shapes (it knows only the synthetic shapes scenes). An image that
cannot be used gets one `error:` line on stderr and the others are still captioned; the exit
status is then 1.
"""

import dataclasses
import json
import sys

from textgen import cli
from textgen.errors import as_cli_message, cli_errors


@dataclasses.dataclass
class CaptionConfig:
    images: list = dataclasses.field(
        metadata={
            "metavar": "IMAGE",
            "nargs": "+",
            "help": "image files (PNG, JPEG, GIF, WebP, TIFF, BMP, ...)",
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
    beam_size: int = dataclasses.field(
        default=3, metadata={"help": "beams per image, >= 1; 1 is greedy decoding"}
    )
    max_length: int = dataclasses.field(default=20, metadata={"help": "most words per caption"})
    temperature: float = dataclasses.field(
        default=0.0,
        metadata={
            "default_help": "0, beam search",
            "help": "sample with this temperature instead of beam search; run directories only",
        },
    )
    top_k: int = dataclasses.field(
        default=0,
        metadata={
            "default_help": "0, all",
            "help": "with --temperature: sample among the k most probable words",
        },
    )
    seed: int = dataclasses.field(
        default=0,
        metadata={
            "help": "with --temperature: the seed of the draws; the same seed gives the same "
            "captions"
        },
    )
    allow_unk: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "allow <unk> in captions (by default never emitted); run directories only"
        },
    )
    length_normalization: float = dataclasses.field(
        default=0.0,
        metadata={
            "metavar": "ALPHA",
            "default_help": "0, plain log-probability",
            "help": "rank beams by log_prob / length**ALPHA, so longer captions are not "
            "penalised; run directories only",
        },
    )
    n_best: int = dataclasses.field(
        default=1,
        metadata={
            "metavar": "K",
            "default_help": "1, the best caption only",
            "help": "the K best distinct beams of each image with their log-probabilities, best "
            "first (K <= --beam-size); text lines become PATH<TAB>RANK<TAB>LOG_PROB<TAB>CAPTION",
        },
    )
    batch_size: int = dataclasses.field(default=32, metadata={"help": "images captioned together"})
    json: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "print a JSON list of objects with file, caption and log_prob instead of lines"
        },
    )
    html: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PAGE",
            "help": "also write an HTML page showing each image next to its caption",
        },
    )


def build_parser():
    return cli.build_parser(
        CaptionConfig,
        "python -m captioning.caption",
        "Caption images with a trained captioning model (beam search from <start> to <end>). "
        "Prints 'PATH<TAB>CAPTION' per image.",
        positionals=("images",),
    )


def caption_images(config, out=None, err=None):
    """Captions `config.images`; prints them; returns the exit status (1 if any image failed)."""
    out = out or sys.stdout
    err = err or sys.stderr
    from captioning.inference.gallery import write_gallery
    from captioning.inference.loading import DecodeOptions, caption_files, load_caption_model

    options = DecodeOptions(
        config.beam_size,
        config.max_length,
        config.temperature,
        config.top_k,
        config.seed,
        config.allow_unk,
        config.length_normalization,
        config.n_best,
    )
    options.check()
    model = load_caption_model(config.model)
    failures = []

    def on_error(error):
        failures.append(error)
        print(f"error: {as_cli_message(error)}", file=err, flush=True)

    results = caption_files(config.images, model, options, config.batch_size, on_error)
    if config.json:
        rows = [{k: v for k, v in dataclasses.asdict(r).items() if v is not None} for r in results]
        json.dump(rows, out, indent=1, ensure_ascii=False)
        out.write("\n")
    else:
        for result in results:
            if result.n_best is None:
                print(f"{result.file}\t{result.caption}", file=out)
                continue
            for rank, beam in enumerate(result.n_best, 1):
                print(f"{result.file}\t{rank}\t{beam['log_prob']:.4f}\t{beam['caption']}", file=out)
    if config.html:
        write_gallery(config.html, results)
        print(f"wrote {config.html}", file=err)
    return 1 if failures else 0


@cli_errors
def main(argv=None):
    config = CaptionConfig(**vars(build_parser().parse_args(argv)))
    return caption_images(config)


if __name__ == "__main__":
    sys.exit(main())
