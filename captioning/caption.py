"""Caption images: `python -m captioning.caption IMAGE [IMAGE ...]`.

Prints one line per image, the path, a tab, then the caption. Without --model it uses the small
model shipped in data/models/shapes (it knows only the synthetic shapes scenes). An image that
cannot be used gets one `error:` line on stderr and the others are still captioned; the exit
status is then 1.

Many images, one model load: an IMAGE may be a folder (its image files, recursively, sorted) or
a glob pattern ('photos/*.jpg', expanded here when the shell did not), and --list FILE adds the
paths in FILE. They are decoded on --workers threads while the model captions the batch before
(`captioning.inference.image_pipeline`), with a progress bar on a terminal. --results writes the
captions as a COCO results file; see `image_ids` for where the ids come from.
"""

import dataclasses
import json
import os
import re
import sys

from captioning.inference.decoding_flags import decode_options, decoding_field
from textgen import cli
from textgen.errors import UsageError, as_cli_message, cli_errors


@dataclasses.dataclass
class CaptionConfig:
    images: list = dataclasses.field(
        default_factory=list,
        metadata={
            "metavar": "IMAGE",
            "nargs": "*",
            "help": "image files (PNG, JPEG, GIF, WebP, TIFF, BMP, ...), folders (every file "
            "below that Pillow can open, sorted, hidden ones left out) or quoted glob patterns "
            "such as 'photos/*.jpg'; required unless --list is given",
        },
    )
    list: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "FILE",
            "default_help": "none",
            "help": "also caption the image paths in FILE, one per line (blank lines skipped); "
            "- reads them from standard input",
        },
    )
    model: str | None = dataclasses.field(
        default=None,
        metadata={
            "metavar": "RUN_DIR_OR_SAVEDMODEL",
            "default_help": "the bundled shapes model in data/models/shapes",
            "help": "a captioning.train run directory or a captioning.export SavedModel",
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
    allow_unk: bool = decoding_field("allow_unk")
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
    workers: int = dataclasses.field(
        default=0,
        metadata={
            "default_help": "0, min(4, the CPU count)",
            "help": "threads that decode and resize images while the model captions the batch "
            "before",
        },
    )
    progress: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "hide the progress bar (it is also hidden when standard error is not a "
            "terminal)"
        },
    )
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
    results: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "JSON",
            "default_help": "not written",
            "help": "also write the captions as a COCO results file, a JSON list of "
            '{"image_id", "caption"}; the id is the number that ends the file name '
            "(COCO_val2014_000000391895.jpg: 391895) unless --annotations is given",
        },
    )
    annotations: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "JSON",
            "default_help": "none",
            "help": "with --results: a COCO captions file (or Karpathy's dataset_*.json) whose "
            "images' file names give the image ids, matched by base name",
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


# COCO's file names end in the image id: COCO_val2014_000000391895.jpg, 000000391895.jpg (2017).
TRAILING_NUMBER = re.compile(r"(\d+)$")


def annotated_image_ids(path):
    """{file base name: image id} from a COCO captions file's `images` (`file_name`, `id`) or a
    Karpathy file's (`filename`, `cocoid` or `imgid`); None for a name listed with two ids."""
    from captioning.coco_data import read_json

    data = read_json(path, "`annotations`")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise UsageError(
            f"`annotations` {path} has no 'images' list; pass a COCO captions file such as "
            "captions_val2014.json"
        )
    ids = {}
    for index, image in enumerate(images):
        name = image.get("file_name", image.get("filename")) if isinstance(image, dict) else None
        image_id = None
        if isinstance(image, dict):
            image_id = image.get("id", image.get("cocoid", image.get("imgid")))
        if not isinstance(name, str) or not isinstance(image_id, int):
            raise UsageError(
                f"`annotations` {path}: images[{index}] lacks a 'file_name' or an integer 'id'; "
                "pass a COCO captions file"
            )
        base = os.path.basename(name)
        ids[base] = image_id if ids.get(base, image_id) == image_id else None
    return ids


def image_ids(paths, annotations=""):
    """The COCO image id of each of `paths`: its file's entry in the `annotations` file (matched
    by base name) when given, otherwise the number that ends the file's name (without its
    extension). Our shapes data names its files val_000012.png, which gives 12, but numbers its
    ids across the splits (val ids follow the train ones): pass its captions_val.json. UsageError,
    before any image is captioned, for a file without an id or two files with the same one."""
    by_name = annotated_image_ids(annotations) if annotations else None
    ids, owners = [], {}
    for path in paths:
        name = os.path.basename(path)
        if by_name is not None:
            if name not in by_name:
                raise UsageError(
                    f"{path}: `annotations` {annotations} lists no image named {name}; pass the "
                    "annotations file of these images, or leave this one out"
                )
            image_id = by_name[name]
            if image_id is None:
                raise UsageError(
                    f"{path}: `annotations` {annotations} lists {name} under two ids; remove the "
                    "duplicate from the file"
                )
        else:
            number = TRAILING_NUMBER.search(os.path.splitext(name)[0])
            if number is None:
                raise UsageError(
                    f"{path}: no image id in the file name (a COCO name ends with it, as in "
                    "COCO_val2014_000000391895.jpg); pass `annotations` with the COCO captions "
                    "file that lists the images"
                )
            image_id = int(number.group(1))
        other = owners.setdefault(image_id, path)
        if other != path:
            raise UsageError(
                f"{other} and {path} both have image id {image_id}; pass `annotations` with the "
                "COCO captions file that lists the images"
            )
        ids.append(image_id)
    return ids


def caption_images(config, out=None, err=None, stdin=None):
    """Captions the images of `config.images` and `config.list`; prints them; returns the exit
    status (1 if any image failed)."""
    out = out or sys.stdout
    err = err or sys.stderr
    from tqdm import tqdm

    from captioning.evaluate import check_results_path, write_results
    from captioning.inference.gallery import write_gallery
    from captioning.inference.image_pipeline import explained, image_paths, read_path_list
    from captioning.inference.loading import caption_files, load_caption_model

    options = decode_options(config)
    options.check()
    if not config.images and not config.list:
        raise UsageError(
            "no images given; pass image files, folders or glob patterns, or `list` FILE"
        )
    if config.batch_size < 1:
        raise UsageError(f"`batch_size` must be >= 1, got {config.batch_size}")
    if config.workers < 0:
        raise UsageError(
            f"`workers` must be >= 0 (0 means min(4, the CPU count)), got {config.workers}"
        )
    if config.annotations and not config.results:
        raise UsageError("`annotations` gives the image ids of `results`; pass `results` too")
    if config.results:
        check_results_path(config.results)
    failures = []

    def on_error(error):
        failures.append(error)
        # Through tqdm, so that the line is not drawn over by the progress bar.
        tqdm.write(f"error: {as_cli_message(explained(error))}", file=err)

    paths = image_paths(config.images)
    if config.list:
        paths += image_paths(read_path_list(config.list, stdin), patterns=False)
        if not paths:
            raise UsageError(f"`list` {config.list} lists no image paths")
    if config.results:
        # Only files have ids; a missing file or an empty folder gets its error line in turn.
        files = [path for path in paths if os.path.isfile(path)]
        id_of = dict(zip(files, image_ids(files, config.annotations)))
    model = load_caption_model(config.model)
    with tqdm(
        total=len(paths),
        unit="img",
        desc="captioning",
        file=err,
        leave=False,
        disable=None if config.progress else True,
        dynamic_ncols=True,
    ) as bar:
        results = caption_files(
            paths, model, options, config.batch_size, on_error, config.workers, bar.update
        )
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
    if config.results:
        write_results(
            config.results, [{"image_id": id_of[r.file], "caption": r.caption} for r in results]
        )
        print(f"wrote {config.results}", file=err)
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
