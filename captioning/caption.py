"""Caption images: `python -m captioning.caption IMAGE [IMAGE ...]`.

Prints one line per image, the path, a tab, then the caption. Without --model it uses the small
model shipped in data/models/shapes (it knows only the synthetic shapes scenes). An image that
cannot be used gets one `error:` line on stderr and the others are still captioned; the exit
status is then 1.
"""

import dataclasses
import json
import sys

from textgen.cli import ArgumentParser
from textgen.errors import cli_errors


@dataclasses.dataclass
class CaptionConfig:
    images: list                        # image files to caption
    model: str | None = None            # run directory or SavedModel (None: the bundled model)
    beam_size: int = 3                  # beams per image (1: greedy)
    max_length: int = 20                # most words per caption
    temperature: float = 0.0            # > 0: sample instead of beam search (run directories only)
    top_k: int = 0                      # with --temperature: sample among the k most probable words
    seed: int = 0                       # with --temperature: same seed, same captions
    allow_unk: bool = False             # let captions contain <unk> (run directories only)
    length_normalization: float = 0.0   # beam ranking by log_prob / length**alpha (run directories only)
    batch_size: int = 32                # images decoded together
    json: bool = False                  # print a JSON list of {file, caption, log_prob}
    html: str = ""                      # also write a gallery page (image beside caption) here


def build_parser():
    parser = ArgumentParser(
        prog="python -m captioning.caption",
        description="Caption images with a trained captioning model (beam search from <start> "
                    "to <end>). Prints 'PATH<TAB>CAPTION' per image.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, GIF, WebP, TIFF, BMP, ...)")
    parser.add_argument("--model", metavar="RUN_DIR_OR_SAVEDMODEL",
                        help="a captioning.train run directory or a captioning.export SavedModel "
                             "(default: the bundled shapes model in data/models/shapes)")
    parser.add_argument("--beam-size", type=int, default=3, help="beams per image; 1 is greedy decoding (default: 3)")
    parser.add_argument("--max-length", type=int, default=20, help="most words per caption (default: 20)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sample with this temperature instead of beam search (default: 0, "
                             "beam search; run directories only)")
    parser.add_argument("--top-k", type=int, default=0,
                        help="with --temperature: sample among the k most probable words (default: 0, all)")
    parser.add_argument("--seed", type=int, default=0, help="with --temperature: the seed of the draws (default: 0)")
    parser.add_argument("--allow-unk", action="store_true",
                        help="allow <unk> in captions (default: never emitted; run directories only)")
    parser.add_argument("--length-normalization", type=float, default=0.0, metavar="ALPHA",
                        help="rank beams by log_prob / length**ALPHA, so longer captions are not "
                             "penalised (default: 0, plain log-probability; run directories only)")
    parser.add_argument("--batch-size", type=int, default=32, help="images captioned together (default: 32)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of objects with file, caption and log_prob instead of lines")
    parser.add_argument("--html", default="", metavar="PAGE",
                        help="also write an HTML page showing each image next to its caption")
    return parser


def caption_images(config, out=None, err=None):
    """Captions `config.images`; prints them; returns the exit status (1 if any image failed)."""
    out = out or sys.stdout
    err = err or sys.stderr
    from captioning.caption_model import DecodeOptions, caption_files, load_caption_model
    from captioning.gallery import write_gallery

    options = DecodeOptions(config.beam_size, config.max_length, config.temperature, config.top_k,
                            config.seed, config.allow_unk, config.length_normalization)
    options.check()
    model = load_caption_model(config.model)
    failures = []

    def on_error(error):
        failures.append(error)
        print(f"error: {error}", file=err, flush=True)

    results = caption_files(config.images, model, options, config.batch_size, on_error)
    if config.json:
        json.dump([dataclasses.asdict(r) for r in results], out, indent=1, ensure_ascii=False)
        out.write("\n")
    else:
        for result in results:
            print(f"{result.file}\t{result.caption}", file=out)
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
