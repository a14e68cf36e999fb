"""Reading caption data sets: COCO caption files (through pycocotools) and Karpathy-split JSON.

Both give a plain list of `CaptionRecord(image_id, path, captions, scene)`. Bad input is either a
one-line UsageError (it would spoil the whole run) or a skip that is counted and logged (one bad
file among thousands should not stop training):

    annotation file missing, not UTF-8, not JSON ...... UsageError (with line and column)
    JSON that is not COCO / Karpathy format ............ UsageError naming the missing key
    caption that is not text ........................... UsageError naming the annotation
    empty caption (nothing left after tokenising) ...... caption skipped, counted
    image with no captions left ........................ image skipped, counted
    image listed but its file missing .................. skipped, counted (UsageError if all are)
    corrupt/truncated/non-image/unsupported file, or
    one above Pillow's decompression-bomb limit ........ skipped and named (UsageError if all are)

Where images are checked: `check_images="verify"` (the default) opens every file and runs
Pillow's `verify()` while reading the annotations: cheap, and it catches missing files, non-images,
bad headers, PNG checksum errors and truncated PNGs, and decompression bombs. A truncated JPEG
passes `verify()`; it is caught when the pixels are first decoded, by `load_record_images`
(which skips and names it too), or right here with `check_images="decode"` (slower: decodes all).

`python -m captioning.coco_data` reads a data set, prints what it found and what it skipped,
and can write the vocabulary of its captions.
"""

import contextlib
import dataclasses
import io
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # importing textgen loads TensorFlow

import numpy as np  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from captioning.datasets.images import ImageError, check_image, load_image, load_images  # noqa: E402
from captioning.datasets.tokens import build_vocabulary, encode_captions, tokenize  # noqa: E402
from textgen import cli  # noqa: E402
from textgen.errors import UsageError, cli_errors  # noqa: E402

# Karpathy's split names; "restval" is the part of COCO val2014 that his split trains on.
KARPATHY_SPLITS = {
    "train": ("train", "restval"),
    "val": ("val",),
    "test": ("test",),
    "restval": ("restval",),
}
CHECK_IMAGES = ("verify", "decode", "none")
SHOWN = 5  # how many file names a "skipped N files" line lists


@dataclasses.dataclass
class CaptionRecord:
    image_id: int  # COCO image id (Karpathy: cocoid, else imgid)
    path: str  # the image file: images_dir joined with the file name
    captions: list[str]  # the non-empty reference captions, as written in the file
    scene: dict | None = (
        None  # shapes data set only: the ground-truth scene (see captioning.shapes)
    )


def warn(message):
    print(message, file=sys.stderr)


def read_json(path, what="annotation file"):
    """The parsed JSON at `path`; UsageError naming line and column when it is not JSON."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UsageError(f"{what} {path} is a directory; pass the path of a JSON file")
    if not os.path.exists(path):
        raise UsageError(f"{what} {path} does not exist; pass the path of a JSON file")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise UsageError(f"{what} {path} is empty; pass a JSON file with the captions")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{what} {path} is not JSON: byte {error.start} is not UTF-8 text "
            "(is it an image or an archive?)"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{what} {path} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}"
        ) from None


def is_karpathy(data):
    """Karpathy's dataset_*.json: {"images": [{"sentences": ...}, ...]} and no "annotations"."""
    return (
        isinstance(data, dict)
        and "annotations" not in data
        and isinstance(data.get("images"), list)
        and bool(data["images"])
        and isinstance(data["images"][0], dict)
        and "sentences" in data["images"][0]
    )


def require_keys(entry, keys, where, path):
    if not isinstance(entry, dict):
        raise UsageError(f"{path}: {where} is a JSON {type(entry).__name__}, expected an object")
    for key in keys:
        if key not in entry:
            raise UsageError(f"{path}: not COCO caption format: {where} has no {key!r} key")


def validate_coco(data, path):
    """UsageError naming the first key a COCO caption file lacks."""
    if not isinstance(data, dict):
        raise UsageError(
            f"{path}: not COCO caption format: the top level is a JSON {type(data).__name__}, "
            "expected an object with 'images' and 'annotations'"
        )
    for key in ("images", "annotations"):
        if key not in data:
            raise UsageError(f"{path}: not COCO caption format: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise UsageError(
                f"{path}: not COCO caption format: {key!r} is a JSON "
                f"{type(data[key]).__name__}, expected a list"
            )
    seen = set()
    for i, image in enumerate(data["images"]):
        require_keys(image, ("id", "file_name"), f"images[{i}]", path)
        if image["id"] in seen:
            raise UsageError(
                f"{path}: image id {image['id']} appears twice in 'images'; ids must be unique"
            )
        seen.add(image["id"])
    for i, annotation in enumerate(data["annotations"]):
        if (
            isinstance(annotation, dict)
            and "caption" not in annotation
            and ("bbox" in annotation or "segmentation" in annotation or "keypoints" in annotation)
        ):
            raise UsageError(
                f"{path}: this is an instances/keypoints annotation file, not captions; "
                "pass a captions_*.json file"
            )
        require_keys(annotation, ("image_id", "caption"), f"annotations[{i}]", path)
        if not isinstance(annotation["caption"], str):
            raise UsageError(
                f"{path}: annotations[{i}] (id {annotation.get('id')}): 'caption' is a JSON "
                f"{type(annotation['caption']).__name__}, expected text"
            )


def coco_candidates(data, path, images_dir, log):
    """(image_id, path, captions, scene) for every image, through pycocotools' index."""
    validate_coco(data, path)
    # What COCO(path) does, minus its own json.load: the file is parsed once, by read_json,
    # which can say where it is broken.
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    image_ids = coco.getImgIds()
    orphans = sum(1 for a in data["annotations"] if a["image_id"] not in coco.imgs)
    if orphans:
        log(f"{path}: ignored {orphans} caption(s) whose image_id is not in 'images'")
    candidates = []
    for image in coco.loadImgs(image_ids):
        captions = [a["caption"] for a in coco.imgToAnns[image["id"]]]
        candidates.append(
            (
                image["id"],
                os.path.join(images_dir, image["file_name"]),
                captions,
                image.get("scene"),
            )
        )
    return candidates


def karpathy_candidates(data, path, images_dir, split):
    """(image_id, path, captions, None) for the images of `split` (train = train + restval)."""
    if split not in KARPATHY_SPLITS:
        raise UsageError(f"unknown split {split!r}; pass --split train, val, test or restval")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UsageError(f"{path}: not Karpathy split format: missing top-level key 'images'")
    wanted = KARPATHY_SPLITS[split]
    candidates, present = [], set()
    for i, image in enumerate(data["images"]):
        require_keys(image, ("split", "filename", "sentences"), f"images[{i}]", path)
        present.add(image["split"])
        if image["split"] not in wanted:
            continue
        captions = []
        for j, sentence in enumerate(image["sentences"]):
            if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
                captions.append(sentence["raw"])
            elif isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
                captions.append(" ".join(map(str, sentence["tokens"])))
            else:
                raise UsageError(
                    f"{path}: images[{i}].sentences[{j}] has no 'raw' text or 'tokens' list"
                )
        image_id = image.get("cocoid", image.get("imgid", i))
        file_path = os.path.join(images_dir, image.get("filepath", ""), image["filename"])
        candidates.append((image_id, file_path, captions, None))
    if not candidates:
        shown = ", ".join(sorted(map(str, present))) or "none"
        raise UsageError(
            f"{path}: no images in split {split!r} (splits in the file: {shown}); "
            "pass another --split"
        )
    return candidates


def keep_usable(candidates, source, images_dir, check_images, log):
    """The records whose captions and image files are usable; the rest counted and logged."""
    if check_images not in CHECK_IMAGES:
        raise UsageError(f"`check_images` must be verify, decode or none, got {check_images!r}")
    records, missing, empty_captions, no_captions, bad_images = [], [], 0, [], []
    for image_id, path, captions, scene in candidates:
        kept_captions = [c for c in captions if tokenize(c)]
        empty_captions += len(captions) - len(kept_captions)
        if not kept_captions:
            no_captions.append(path)
            continue
        if check_images != "none":
            try:
                if check_images == "verify":
                    check_image(path)
                else:
                    load_image(path, 8)
            except ImageError as error:
                if error.kind == "missing":
                    missing.append(path)
                else:
                    bad_images.append(error)
                    log(f"skipped image {error}")
                continue
        records.append(CaptionRecord(image_id, path, kept_captions, scene))

    total = len(candidates)
    if empty_captions:
        log(f"{source}: skipped {empty_captions} empty caption(s)")
    if no_captions:
        log(
            f"{source}: skipped {len(no_captions)} of {total} images with no (non-empty) caption, "
            f"e.g. {', '.join(no_captions[:SHOWN])}"
        )
    if missing:
        if len(missing) == total:
            raise UsageError(
                f"none of the {total} images listed in {source} exist under {images_dir} "
                f"(looked for {missing[0]}); check --images-dir"
            )
        log(
            f"{source}: skipped {len(missing)} of {total} images whose file is missing, "
            f"e.g. {', '.join(missing[:SHOWN])}"
        )
    if bad_images:
        log(f"{source}: skipped {len(bad_images)} of {total} unusable image file(s) (named above)")
    if not records:
        raise UsageError(
            f"{source}: no usable images: all {total} were skipped (see the lines above)"
        )
    return records


def read_coco_captions(annotation_file, images_dir, check_images="verify", log=warn):
    """The records of a COCO caption file (captions_train2017.json, or a shapes data set's)."""
    data = read_json(annotation_file)
    if is_karpathy(data):
        raise UsageError(
            f"{annotation_file} is a Karpathy split file, not COCO format; "
            "read it with read_karpathy_captions (or read_captions and a split)"
        )
    candidates = coco_candidates(data, os.fspath(annotation_file), os.fspath(images_dir), log)
    return keep_usable(candidates, os.fspath(annotation_file), images_dir, check_images, log)


def read_karpathy_captions(
    karpathy_file, images_dir, split="train", check_images="verify", log=warn
):
    """The records of one split of Karpathy's dataset_coco.json (train = train + restval)."""
    data = read_json(karpathy_file, what="Karpathy split file")
    candidates = karpathy_candidates(data, os.fspath(karpathy_file), os.fspath(images_dir), split)
    return keep_usable(candidates, os.fspath(karpathy_file), images_dir, check_images, log)


def read_captions(annotation_file, images_dir, split="train", check_images="verify", log=warn):
    """Either format, told apart by content. For a COCO file the file is the split and `split`
    is not used; for a Karpathy file it selects the images."""
    data = read_json(annotation_file)
    path = os.fspath(annotation_file)
    if is_karpathy(data):
        candidates = karpathy_candidates(data, path, os.fspath(images_dir), split)
    else:
        candidates = coco_candidates(data, path, os.fspath(images_dir), log)
    return keep_usable(candidates, path, images_dir, check_images, log)


def caption_rows(records):
    """One row per caption: (image_indices into `records`, token lists)."""
    image_indices, token_lists = [], []
    for i, record in enumerate(records):
        for caption in record.captions:
            image_indices.append(i)
            token_lists.append(tokenize(caption))
    return np.array(image_indices, np.int64), token_lists


def load_record_images(records, image_size, log=warn):
    """Decodes the records' images: (uint8 [N, image_size, image_size, 3], the records kept).
    Images that fail to decode (e.g. truncated JPEGs, which `verify()` lets through) are skipped
    and named."""
    pixels, kept = load_images([r.path for r in records], image_size, log=log)
    if len(kept) < len(records):
        log(f"skipped {len(records) - len(kept)} of {len(records)} images that failed to decode")
    return pixels, [records[i] for i in kept]


# ---------------------------------------------------------------------------------------------
# CLI: look at a data set and write its vocabulary


@dataclasses.dataclass
class DataConfig:
    annotations: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PATH",
            "required": True,
            "help": "caption file: COCO format (captions_*.json) or Karpathy's dataset_*.json",
        },
    )
    images_dir: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PATH",
            "required": True,
            "help": "directory that the image file names in the caption file are relative to",
        },
    )
    split: str = dataclasses.field(
        default="train",
        metadata={
            "help": "for a Karpathy file: train (train + restval), val, test or restval; ignored "
            "for COCO files"
        },
    )
    min_count: int = dataclasses.field(
        default=1,
        metadata={"help": "words seen fewer times than this in the captions become <unk>"},
    )
    # The shapes data's captions need 22.
    max_length: int = dataclasses.field(
        default=24,
        metadata={
            "help": "caption length in tokens after truncation, not counting <start> and <end>"
        },
    )
    check_images: str = dataclasses.field(
        default="verify",
        metadata={
            "help": "verify: open and verify every image (cheap); decode: decode every image "
            "(catches truncated JPEGs too); none: only when loaded"
        },
    )
    vocab_out: str = dataclasses.field(
        default="",
        metadata={"metavar": "PATH", "help": "write the caption vocabulary (JSON) to this path"},
    )


def build_parser():
    return cli.build_parser(
        DataConfig,
        "python -m captioning.coco_data",
        "Read a captioning data set, report what is usable and what was skipped, and "
        "optionally write the vocabulary of its captions.",
    )


@cli_errors
def main(argv=None):
    config = DataConfig(**vars(build_parser().parse_args(argv)))
    records = read_captions(
        config.annotations, config.images_dir, config.split, config.check_images
    )
    _, token_lists = caption_rows(records)
    vocabulary = build_vocabulary(token_lists, min_count=config.min_count)
    encoded = encode_captions(token_lists, vocabulary, config.max_length)
    lengths = np.array([len(t) for t in token_lists])
    unknown = int(np.sum(encoded == vocabulary.id("<unk>")))
    print(
        f"{len(records)} images, {len(token_lists)} captions, vocabulary {len(vocabulary)} tokens "
        f"(min count {config.min_count})"
    )
    print(
        f"caption length: median {int(np.median(lengths))}, "
        f"95th percentile {int(np.percentile(lengths, 95))}, max {lengths.max()}; "
        f"{np.mean(lengths > config.max_length):.1%} cut to {config.max_length}"
    )
    print(f"<unk> rate: {unknown / max(1, int(np.sum(encoded > 2))):.2%} of caption tokens")
    if config.vocab_out:
        vocabulary.save(config.vocab_out)
        print(f"wrote {config.vocab_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
