"""`python -m captioning.shapes`: a synthetic captioning data set with checkable captions.

Each scene holds one to three non-overlapping shapes (circle, square, triangle) in one of five
well-separated colours and two sizes, on a noisy or textured background. With --max-objects 4
(the harder benchmark set) a scene holds one to four shapes in six colours (orange added) and
three sizes (medium added, the three closer together), captioned with the same five wording
families. Every image gets five
differently worded reference captions naming each shape's size, colour and kind and their spatial
relation; the first one is canonical (always the same words in the same order) so that a small
model can learn it. The scene itself is stored with each image entry, so that
`captioning.metrics.scene_parser.caption_is_correct` can grade any generated caption exactly.

--references (the default, canonical, is what the paragraph above describes):
    canonical  reference 0 the canonical caption, references 1-4 paraphrases of it from one
               template family: all five name every shape and the relation.
    varied     reference 0 the same canonical caption (what --first-captions 1 trains on),
               references 1-4 as if by four different people, as COCO's are
               (`captioning.datasets.varied_references`): each names some of the shapes, in its
               own words, order, length and sentence form, now and then vaguely or with a wrong
               article, and says only what is true of the scene. The scene parser still
               grades the full description, which reference 0 is and most of the others are
               not. The images and scenes are those of canonical; the annotation files' `info`
               records "references": "varied".

Layout written under --out:
    images/train_000000.png, ..., images/val_000000.png, ...
    annotations/captions_train.json, annotations/captions_val.json   (COCO caption format)

Scene format (the "scene" key of each COCO image entry):
    {"objects": [{"shape", "color", "size", "x", "y", "diameter"}, ...], "relation": R}
    with x, y the shape's centre and diameter the side of its bounding box, in pixels, and R:
      1 object:  null
      2 objects: "left of" or "above", read as objects[0] R objects[1]
      3 or 4 objects: "left to right": objects are listed in that order

Generation is deterministic: image i of a split (its varied references too) depends only on
(seed, split, i), so the same flags give byte-identical files, and the validation images do not
change with --train-size.
Re-running into the same --out overwrites; images of an earlier, larger run stay on disk but
are not listed in the new annotation files.
"""

import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # importing textgen loads TensorFlow

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from captioning.datasets.varied_references import varied_references  # noqa: E402
from textgen import cli  # noqa: E402
from textgen.errors import UsageError, cli_errors  # noqa: E402
from textgen.io import atomic_write_text  # noqa: E402

# Far apart in RGB so that colour never needs guessing, even after the per-shape jitter.
COLORS = {
    "red": (220, 35, 35),
    "green": (35, 175, 50),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 45, 195),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
# --max-objects 4: a sixth colour and a third size (the defaults stay byte-identical).
COLORS_4 = {**COLORS, "orange": (245, 135, 25)}
SIZES_4 = ("small", "medium", "large")

# Bounding-box side as a fraction of the image side; large is ~1.8x small so size is never
# ambiguous.
DIAMETER_FRACTION = {"small": 0.17, "large": 0.31}
# Four shapes must fit in the same square: smaller, and ~1.35x apart from size to size.
DIAMETER_FRACTION_4 = {"small": 0.13, "medium": 0.18, "large": 0.245}
SIZE_JITTER = 0.05  # +- relative jitter of the diameter
COLOR_JITTER = 18  # +- per-channel jitter of a shape's colour
MIN_GAP_FRACTION = 0.04  # empty space between any two bounding boxes, as a fraction of the side
ORDER_GAP_FRACTION = 0.15  # 3 objects: centres this far apart in x, so left-to-right order is plain
ORDER_GAP_FRACTION_4 = 0.12  # 4 objects: the same, in less room
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: antialiased edges

# Words used in the captions. The canonical (first) caption uses only the first synonym.
SIZE_SYNONYMS = {
    "small": ("small", "little"),
    "medium": ("medium", "midsize"),
    "large": ("large", "big"),
}

SPLIT_CODES = {"train": 0, "val": 1}  # part of each image's random seed
REFERENCE_STYLES = ("canonical", "varied")


@dataclasses.dataclass
class ShapesConfig:
    out: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "DIR",
            "required": True,
            "help": "output directory; writes OUT/images/*.png and "
            "OUT/annotations/captions_{train,val}.json",
        },
    )
    train_size: int = dataclasses.field(
        default=5000, metadata={"help": "number of training images, >= 0"}
    )
    val_size: int = dataclasses.field(
        default=500, metadata={"help": "number of validation images, >= 0"}
    )
    seed: int = dataclasses.field(
        default=0,
        metadata={"help": "random seed: the same seed and sizes give byte-identical files"},
    )
    image_size: int = dataclasses.field(
        default=64, metadata={"help": "width and height of the images in pixels, 32 to 1024"}
    )
    max_objects: int = dataclasses.field(
        default=3,
        metadata={
            "help": "scenes hold between 1 and this many shapes: 1, 2, 3 or 4; 4 also adds a "
            "sixth colour and a third size (the harder benchmark set)"
        },
    )
    references: str = dataclasses.field(
        default="canonical",
        metadata={
            "help": "the five reference captions of an image: canonical (the canonical caption "
            "and four paraphrases of it, each naming every shape and the relation) or varied "
            "(the canonical caption and four written as if by different people, like COCO's: "
            "each names some of the shapes, the salient ones more often, with its own words, "
            "order, relations and length, sometimes vaguely or with a wrong article, and stays "
            "true of the scene); the images are the same"
        },
    )


def validate(config):
    if not config.out:
        raise UsageError("--out is required: the directory to write images/ and annotations/ into")
    for name in ("train_size", "val_size"):
        value = getattr(config, name)
        if value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if config.train_size + config.val_size == 0:
        raise UsageError("--train-size and --val-size are both 0; ask for at least one image")
    if config.image_size < 32:
        raise UsageError(
            f"--image-size must be at least 32 so that three shapes fit, got {config.image_size}"
        )
    if config.image_size > 1024:
        raise UsageError(f"--image-size must be at most 1024, got {config.image_size}")
    if config.max_objects not in (1, 2, 3, 4):
        raise UsageError(f"--max-objects must be 1, 2, 3 or 4, got {config.max_objects}")
    if config.references not in REFERENCE_STYLES:
        raise UsageError(f"--references must be canonical or varied, got {config.references!r}")
    if config.max_objects == 4 and config.image_size < 48:
        raise UsageError(
            f"--max-objects 4 needs --image-size 48 or more so that four shapes fit, got "
            f"{config.image_size}"
        )


# ---------------------------------------------------------------------------------------------
# Scenes


def image_rng(seed, split, index):
    """The generator for one image: independent of every other image, so any subset (or a
    parallel run) reproduces the same bytes."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def references_rng(seed, split, index):
    """The varied references' own generator: drawing from image_rng instead would shift the
    pixels' draws, and the two styles would no longer share their images."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index, 1])


def boxes_apart(a, b, gap):
    """Whether the bounding boxes of objects a and b are at least `gap` apart along x or y."""
    reach = (a["diameter"] + b["diameter"]) / 2 + gap
    return abs(a["x"] - b["x"]) >= reach or abs(a["y"] - b["y"]) >= reach


def two_object_relation(a, b, gap):
    """'left of' / 'above' when one clearly dominates, else None (diagonal placements are
    ambiguous and get re-drawn). Returns (relation, first, second) with first R second."""
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    reach = (a["diameter"] + b["diameter"]) / 2 + gap
    if abs(dx) >= reach and abs(dy) <= abs(dx) / 2:
        return ("left of", a, b) if dx > 0 else ("left of", b, a)
    if abs(dy) >= reach and abs(dx) <= abs(dy) / 2:
        return ("above", a, b) if dy > 0 else ("above", b, a)
    return None


def palette(max_objects):
    """(colours, sizes, diameter fractions, order gap) of scenes with up to `max_objects`."""
    if max_objects == 4:
        return COLORS_4, SIZES_4, DIAMETER_FRACTION_4, ORDER_GAP_FRACTION_4
    return COLORS, SIZES, DIAMETER_FRACTION, ORDER_GAP_FRACTION


def sample_scene(rng, image_size, max_objects=3):
    """A random scene: {"objects": [...], "relation": ...} in the canonical order
    (see module doc)."""
    colors, sizes, diameter_fraction, order_gap = palette(max_objects)
    num_objects = int(rng.integers(1, max_objects + 1))
    gap = MIN_GAP_FRACTION * image_size
    while True:
        # Distinct (shape, colour, size) triples: a caption can then always tell the objects apart.
        kinds = set()
        while len(kinds) < num_objects:
            kinds.add(
                (
                    SHAPES[rng.integers(len(SHAPES))],
                    list(colors)[rng.integers(len(colors))],
                    sizes[rng.integers(len(sizes))],
                )
            )
        kinds = sorted(kinds)  # set order is not deterministic across processes; sort it
        order = rng.permutation(num_objects)
        objects = []
        for i in order:
            shape, color, size = kinds[i]
            diameter = (
                diameter_fraction[size] * image_size * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
            )
            objects.append(
                {"shape": shape, "color": color, "size": size, "diameter": round(diameter, 1)}
            )
        for _ in range(50):  # placements; if none fits, draw new kinds and sizes
            for obj in objects:
                low = obj["diameter"] / 2 + 1
                obj["x"] = round(float(rng.uniform(low, image_size - low)), 1)
                obj["y"] = round(float(rng.uniform(low, image_size - low)), 1)
            if not all(
                boxes_apart(a, b, gap) for i, a in enumerate(objects) for b in objects[i + 1 :]
            ):
                continue
            if num_objects == 1:
                return {"objects": objects, "relation": None}
            if num_objects == 2:
                found = two_object_relation(objects[0], objects[1], gap)
                if found:
                    relation, first, second = found
                    return {"objects": [first, second], "relation": relation}
                continue
            by_x = sorted(objects, key=lambda o: o["x"])
            if all(b["x"] - a["x"] >= order_gap * image_size for a, b in zip(by_x, by_x[1:])):
                return {"objects": by_x, "relation": "left to right"}


# ---------------------------------------------------------------------------------------------
# Captions


def object_phrase(obj, rng=None):
    """'a large red circle'; with `rng`, the size word is a random synonym ('a big red circle')."""
    words = SIZE_SYNONYMS[obj["size"]]
    size = words[0] if rng is None else words[rng.integers(len(words))]
    return f"a {size} {obj['color']} {obj['shape']}"


# Paraphrase templates; {a}, {b}, {c} are object phrases in the scene's canonical order.
TEMPLATES = {
    None: [
        "there is {a}",
        "a picture of {a}",
        "{a} on a textured background",
        "just {a}",
        "an image with {a}",
        "{a} by itself",
    ],
    "left of": [
        "{b} to the right of {a}",
        "there is {a} to the left of {b}",
        "{a} on the left and {b} on the right",
        "{b} is right of {a}",
        "{a} is to the left of {b}",
        "{b} on the right and {a} on the left",
    ],
    "above": [
        "{b} below {a}",
        "there is {a} above {b}",
        "{a} at the top and {b} at the bottom",
        "{b} is under {a}",
        "{a} is over {b}",
        "{b} beneath {a}",
    ],
    "left to right": [
        "from left to right: {a}, {b} and {c}",
        "{c}, {b} and {a} from right to left",
        "there is {a}, then {b}, then {c} from left to right",
        "left to right there are {a}, {b} and {c}",
        "three shapes from left to right: {a}, {b} and {c}",
        "from right to left: {c}, {b} and {a}",
    ],
    # Four objects: the same six wordings with one more phrase.
    "left to right 4": [
        "from left to right: {a}, {b}, {c} and {d}",
        "{d}, {c}, {b} and {a} from right to left",
        "there is {a}, then {b}, then {c}, then {d} from left to right",
        "left to right there are {a}, {b}, {c} and {d}",
        "four shapes from left to right: {a}, {b}, {c} and {d}",
        "from right to left: {d}, {c}, {b} and {a}",
    ],
}
CANONICAL = {
    None: "{a}",
    "left of": "{a} left of {b}",
    "above": "{a} above {b}",
    "left to right": "{a}, {b} and {c} from left to right",
    "left to right 4": "{a}, {b}, {c} and {d} from left to right",
}


def scene_captions(scene, rng, num_captions=5):
    """The canonical caption, then num_captions - 1 paraphrases with different templates."""
    relation = scene["relation"]
    if len(scene["objects"]) == 4:
        relation = "left to right 4"
    names = "abcd"
    canonical = {names[i]: object_phrase(o) for i, o in enumerate(scene["objects"])}
    captions = [CANONICAL[relation].format(**canonical)]
    templates = TEMPLATES[relation]
    for t in rng.permutation(len(templates))[: num_captions - 1]:
        phrases = {names[i]: object_phrase(o, rng) for i, o in enumerate(scene["objects"])}
        captions.append(templates[t].format(**phrases))
    return captions


# ---------------------------------------------------------------------------------------------
# Pixels


def background(rng, image_size):
    """A muted base colour with one of four textures, plus mild pixel noise. Noise is kept small
    and quantised so that PNGs stay a few kilobytes."""
    size = image_size
    base = rng.uniform(70, 180) + rng.uniform(-25, 25, size=3)
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # plain
        texture = np.zeros((size, size), np.float32)
    elif kind == 1:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        texture = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(20, 45)
    elif kind == 2:  # soft stripes in a random direction
        angle = rng.uniform(0, np.pi)
        frequency = rng.uniform(3, 8)
        texture = np.sin(
            2 * np.pi * frequency * (np.cos(angle) * xx + np.sin(angle) * yy)
        ) * rng.uniform(8, 18)
    else:  # blotches: coarse noise, bilinearly upsampled
        coarse = rng.normal(0, 1, size=(5, 5)).astype(np.float32)
        coarse = (coarse - coarse.min()) / (np.ptp(coarse) + 1e-6) * 255
        blotches = Image.fromarray(coarse.astype(np.uint8)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        texture = (np.asarray(blotches, np.float32) / 255 - 0.5) * rng.uniform(25, 45)
    noise = rng.integers(-2, 3, size=(size, size, 1)) * rng.uniform(2, 5)  # grey noise, 5 levels
    pixels = base[None, None, :] + texture[:, :, None] + noise
    return pixels.astype(np.float32)


def shape_mask(obj, image_size):
    """The shape's coverage in [0, 1] at image resolution (drawn at SUPERSAMPLE x, box-filtered)."""
    scale = SUPERSAMPLE
    mask = Image.new("L", (image_size * scale, image_size * scale), 0)
    draw = ImageDraw.Draw(mask)
    x, y, half = obj["x"] * scale, obj["y"] * scale, obj["diameter"] * scale / 2
    if obj["shape"] == "circle":
        draw.ellipse([x - half, y - half, x + half, y + half], fill=255)
    elif obj["shape"] == "square":
        side = half * 0.88  # a square of the full box looks much bigger than the circle
        draw.rectangle([x - side, y - side, x + side, y + side], fill=255)
    else:  # equilateral triangle pointing up, centred in its box
        height = half * 2 * 0.866
        draw.polygon(
            [(x, y - height / 2), (x + half, y + height / 2), (x - half, y + height / 2)], fill=255
        )
    return np.asarray(mask.reduce(scale), np.float32) / 255


def render(scene, rng, image_size):
    """The scene as a uint8 [image_size, image_size, 3] array."""
    pixels = background(rng, image_size)
    for obj in scene["objects"]:
        color = np.array(COLORS_4[obj["color"]], np.float32) + rng.integers(
            -COLOR_JITTER, COLOR_JITTER + 1, size=3
        )
        alpha = shape_mask(obj, image_size)[:, :, None]
        pixels = pixels * (1 - alpha) + color * alpha
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def generate_example(seed, split, index, image_size, max_objects=3, references="canonical"):
    """(pixels, scene, captions) for image `index` of `split`; deterministic. `references`:
    "canonical" or "varied" (see the module doc); the pixels and scene do not depend on it."""
    rng = image_rng(seed, split, index)
    scene = sample_scene(rng, image_size, max_objects)
    captions = scene_captions(scene, rng)  # drawn in both styles: the pixels come next
    if references == "varied":
        captions = captions[:1] + varied_references(
            scene, references_rng(seed, split, index), image_size, avoid=captions[:1]
        )
    pixels = render(scene, rng, image_size)
    return pixels, scene, captions


# ---------------------------------------------------------------------------------------------
# Files


def coco_document(split, entries, config):
    """The COCO caption JSON for one split: `entries` are (image_id, file_name, scene, captions)."""
    images, annotations = [], []
    for image_id, file_name, scene, captions in entries:
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": config.image_size,
                "height": config.image_size,
                "license": 1,
                "scene": scene,
            }
        )
        for k, caption in enumerate(captions):
            annotations.append(
                {
                    "id": (image_id - 1) * len(captions) + k + 1,
                    "image_id": image_id,
                    "caption": caption,
                }
            )
    # No dates or host names in `info`: they would break byte-identical output.
    info = {
        "description": "synthetic shapes captions (captioning.shapes)",
        "version": "1.0",
        "split": split,
        "seed": config.seed,
        "image_size": config.image_size,
    }
    if config.references != "canonical":  # only then: the default files stay as they were
        info["references"] = config.references
    return {
        "info": info,
        "licenses": [{"id": 1, "name": "CC0 1.0 (synthetic data)", "url": ""}],
        "type": "captions",
        "images": images,
        "annotations": annotations,
    }


def generate(config, log=None):
    """Writes the data set described by `config`; returns {split: annotation file path}.

    Images are written first and each annotation file last (atomically), so an interrupted run
    never leaves an annotation file that points at missing images.
    """
    validate(config)
    images_dir = os.path.join(config.out, "images")
    annotations_dir = os.path.join(config.out, "annotations")
    try:
        os.makedirs(images_dir, exist_ok=True)
        os.makedirs(annotations_dir, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create {config.out}: {error.strerror}; pass --out with a writable directory"
        ) from None
    written = {}
    first_id = {"train": 1, "val": config.train_size + 1}  # image ids are unique across the splits
    for split, count in (("train", config.train_size), ("val", config.val_size)):
        entries = []
        for index in range(count):
            pixels, scene, captions = generate_example(
                config.seed, split, index, config.image_size, config.max_objects, config.references
            )
            file_name = f"{split}_{index:06d}.png"
            # compress_level 6 is zlib's default: the same bytes on every run with this zlib.
            Image.fromarray(pixels).save(
                os.path.join(images_dir, file_name), format="PNG", compress_level=6
            )
            entries.append((first_id[split] + index, file_name, scene, captions))
        path = os.path.join(annotations_dir, f"captions_{split}.json")
        document = coco_document(split, entries, config)
        atomic_write_text(path, json.dumps(document, separators=(",", ":")))
        written[split] = path
        if log is not None:
            log(f"{split}: {count} images, {count * 5} captions -> {path}")
    return written


def build_parser():
    return cli.build_parser(
        ShapesConfig,
        "python -m captioning.shapes",
        "Generate the synthetic shapes captioning data set: PNG scenes of 1-3 (--max-objects 4: "
        "1-4) coloured shapes "
        "and COCO-format caption files with 5 references and the scene per image.",
    )


@cli_errors
def main(argv=None):
    config = ShapesConfig(**vars(build_parser().parse_args(argv)))
    start = time.perf_counter()
    generate(config, log=print)
    total = config.train_size + config.val_size
    print(f"wrote {total} images to {config.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
