"""The data half of captioning: shapes generator, caption grader, image loading, caption files,
vocabulary. Small and fast: a few dozen 64x64 images at most."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from captioning import coco_data, shapes
from captioning.coco_data import (
    caption_rows,
    load_record_images,
    read_captions,
    read_coco_captions,
    read_karpathy_captions,
)
from captioning.datasets.images import ImageError, check_image, load_image
from captioning.datasets.tokens import (
    SPECIALS,
    build_vocabulary,
    caption_text,
    decode_caption,
    encode_captions,
    tokenize,
)
from captioning.metrics.scene_parser import caption_is_correct
from helpers import Log, snapshot
from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError


def make_shapes(out, train_size=12, val_size=4, seed=0):
    config = shapes.ShapesConfig(out=str(out), train_size=train_size, val_size=val_size, seed=seed)
    return shapes.generate(config)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    make_shapes(out, train_size=16, val_size=4)
    return out


# ---------------------------------------------------------------------------------------------
# Shapes generator


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    make_shapes(tmp_path / "a", seed=3)
    make_shapes(tmp_path / "b", seed=3)
    make_shapes(tmp_path / "c", seed=4)
    a, b, c = (snapshot(tmp_path / name) for name in "abc")
    assert len(a) == 12 + 4 + 2
    assert a == b
    assert a.keys() == c.keys()
    assert a["annotations/captions_train.json"] != c["annotations/captions_train.json"]
    assert sum(a[name] != c[name] for name in a) >= 15


def test_validation_images_do_not_depend_on_train_size(tmp_path):
    make_shapes(tmp_path / "a", train_size=3, val_size=2)
    make_shapes(tmp_path / "b", train_size=5, val_size=2)
    for name in ("val_000000.png", "val_000001.png"):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (
            tmp_path / "b" / "images" / name
        ).read_bytes()


def test_coco_files_load_with_pycocotools(shapes_dir):
    for split, count in (("train", 16), ("val", 4)):
        coco = COCO(str(shapes_dir / "annotations" / f"captions_{split}.json"))
        assert coco.dataset["type"] == "captions"
        assert "info" in coco.dataset and "licenses" in coco.dataset
        image_ids = coco.getImgIds()
        assert len(image_ids) == count
        for image in coco.loadImgs(image_ids):
            captions = [a["caption"] for a in coco.imgToAnns[image["id"]]]
            assert len(captions) == 5 and len(set(captions)) == 5
            assert (image["width"], image["height"]) == (64, 64)
            with Image.open(shapes_dir / "images" / image["file_name"]) as png:
                assert png.size == (64, 64) and png.mode == "RGB"
            scene = image["scene"]
            assert 1 <= len(scene["objects"]) <= 3
            for obj in scene["objects"]:
                assert (
                    obj["color"] in shapes.COLORS
                    and obj["shape"] in shapes.SHAPES
                    and obj["size"] in shapes.SIZES
                )
    train = json.loads((shapes_dir / "annotations" / "captions_train.json").read_text())
    val = json.loads((shapes_dir / "annotations" / "captions_val.json").read_text())
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}


def sample_examples(count, seed=11):
    return [shapes.generate_example(seed, "train", i, 64)[1:] for i in range(count)]


def test_every_generated_caption_is_correct_for_its_scene():
    examples = sample_examples(300)
    assert {len(scene["objects"]) for scene, _ in examples} == {1, 2, 3}
    assert {scene["relation"] for scene, _ in examples} == {
        None,
        "left of",
        "above",
        "left to right",
    }
    for scene, captions in examples:
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            assert caption_is_correct(caption, scene), (caption, scene)
            assert caption_is_correct(tokenize(caption), scene)  # token lists work too
        # The canonical caption: "a <size> <colour> <shape>" with the first synonyms only.
        first = captions[0]
        assert "big" not in first.split() and "little" not in first.split()
        for obj in scene["objects"]:
            assert f"a {obj['size']} {obj['color']} {obj['shape']}" in first


def test_scene_geometry_matches_relation_and_shapes_do_not_overlap():
    for scene, _ in sample_examples(200, seed=5):
        objects = scene["objects"]
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                reach = (a["diameter"] + b["diameter"]) / 2
                assert abs(a["x"] - b["x"]) >= reach or abs(a["y"] - b["y"]) >= reach
        if scene["relation"] == "left of":
            assert objects[0]["x"] < objects[1]["x"]
        elif scene["relation"] == "above":
            assert objects[0]["y"] < objects[1]["y"]
        elif scene["relation"] == "left to right":
            assert [o["x"] for o in objects] == sorted(o["x"] for o in objects)


SWAPS = {
    "left": "right",
    "right": "left",
    "above": "below",
    "below": "above",
    "over": "under",
    "under": "over",
    "beneath": "above",
    "top": "bottom",
    "bottom": "top",
}


def swap_relation(caption):
    return " ".join(SWAPS.get(word, word) for word in caption.split())


def replace_first(caption, words, mapping):
    tokens = caption.split()
    for i, token in enumerate(tokens):
        bare = token.rstrip(",:")
        if bare in words:
            tokens[i] = token.replace(bare, mapping(bare))
            return " ".join(tokens)
    raise AssertionError(f"no word of {words} in {caption!r}")


def test_corrupted_captions_are_incorrect():
    colors = list(shapes.COLORS)
    for scene, captions in sample_examples(120, seed=7):
        for caption in captions:
            wrong_color = replace_first(
                caption, colors, lambda c: colors[(colors.index(c) + 1) % len(colors)]
            )
            assert not caption_is_correct(wrong_color, scene), wrong_color
            wrong_shape = replace_first(
                caption, shapes.SHAPES, lambda s: "square" if s != "square" else "circle"
            )
            assert not caption_is_correct(wrong_shape, scene), wrong_shape
            wrong_size = replace_first(
                caption,
                ("small", "little", "large", "big"),
                lambda s: "large" if s in ("small", "little") else "small",
            )
            assert not caption_is_correct(wrong_size, scene), wrong_size
            if len(scene["objects"]) > 1:
                assert not caption_is_correct(swap_relation(caption), scene), swap_relation(caption)
        # Dropping an object, or describing one object too many.
        phrases = [shapes.object_phrase(o) for o in scene["objects"]]
        if len(phrases) == 2:
            assert not caption_is_correct(phrases[0], scene)
            assert not caption_is_correct(f"{phrases[0]} and {phrases[1]}", scene)  # no relation
        if len(phrases) == 3:
            assert not caption_is_correct(
                f"{phrases[0]} and {phrases[1]} from left to right", scene
            )
            assert not caption_is_correct(f"{phrases[0]}, {phrases[1]} and {phrases[2]}", scene)
        if len(phrases) == 1:
            assert not caption_is_correct(f"{phrases[0]} left of a small red circle", scene)


def test_caption_grader_on_hand_written_captions():
    two = {
        "objects": [
            {"shape": "circle", "color": "red", "size": "large"},
            {"shape": "square", "color": "blue", "size": "small"},
        ],
        "relation": "left of",
    }
    good = [
        "a large red circle left of a small blue square",
        "A small blue square to the right of a big red circle.",
        "there is a big red circle on the left and a little blue square on the right",
        "a small blue square on the right and a large red circle on the left",
        "a large red circle and a small blue square from left to right",
    ]
    bad = [
        "a large red circle right of a small blue square",
        "a large red circle above a small blue square",
        "a red circle left of a small blue square",  # size missing
        "a large red circle left of a small blue",  # shape missing
        "a large red circle left of a small blue square on the left",
        "a large red <unk> circle left of a small blue square",
        "a large red circle left of a small blue square left of a small blue square",
        "",
    ]
    for caption in good:
        assert caption_is_correct(caption, two), caption
    for caption in bad:
        assert not caption_is_correct(caption, two), caption
    three = {
        "objects": [
            {"shape": "triangle", "color": "green", "size": "small"},
            {"shape": "circle", "color": "yellow", "size": "large"},
            {"shape": "square", "color": "purple", "size": "small"},
        ],
        "relation": "left to right",
    }
    assert caption_is_correct(
        "from right to left: a little purple square, a big yellow circle "
        "and a small green triangle",
        three,
    )
    assert not caption_is_correct(
        "a small green triangle, a large yellow circle and a small purple square", three
    )
    assert not caption_is_correct(
        "a small green triangle, a large yellow circle and a small purple square "
        "from left to right above",
        three,
    )


def test_shapes_cli_help_and_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        shapes.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--out", "--train-size", "--val-size", "--seed", "--image-size", "--max-objects"):
        assert flag in help_text
    assert shapes.main(["--out", str(tmp_path / "x"), "--image-size", "8"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --image-size") and error.count("\n") == 1
    assert (
        shapes.main(
            [
                "--out",
                str(tmp_path / "y"),
                "--train-size",
                "2",
                "--val-size",
                "1",
                "--image-size",
                "48",
                "--max-objects",
                "2",
            ]
        )
        == 0
    )
    with Image.open(tmp_path / "y" / "images" / "val_000000.png") as image:
        assert image.size == (48, 48)


# ---------------------------------------------------------------------------------------------
# Image loading


def save(image, path, **options):
    image.save(path, **options)
    return path


def test_modes_are_converted_to_rgb(tmp_path):
    size = 8
    gray = save(Image.new("L", (size, size), 100), tmp_path / "gray.png")
    assert (load_image(gray, size) == 100).all()

    bilevel = save(Image.new("1", (size, size), 1), tmp_path / "bilevel.png")
    assert (load_image(bilevel, size) == 255).all()

    rgba = Image.new("RGBA", (size, size), (255, 0, 0, 128))
    rgba.paste((0, 0, 255, 0), (0, 0, size, size // 2))  # top half fully transparent blue
    pixels = load_image(save(rgba, tmp_path / "rgba.png"), size)
    assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
    assert (pixels[0, 0] == 255).all()  # transparent -> white, not blue
    assert np.abs(pixels[-1, -1].astype(int) - (255, 127, 127)).max() <= 1  # half red over white

    la = save(Image.new("LA", (size, size), (0, 0)), tmp_path / "la.png")
    assert (load_image(la, size) == 255).all()

    palette = Image.new("P", (size, size), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (load_image(save(palette, tmp_path / "p.png"), size) == (10, 200, 30)).all()
    transparent = save(palette, tmp_path / "p_transparent.png", transparency=1)
    assert (load_image(transparent, size) == 255).all()

    cmyk = save(Image.new("CMYK", (size, size), (255, 0, 0, 0)), tmp_path / "cmyk.tif")
    assert (load_image(cmyk, size) == (0, 255, 255)).all()
    cmyk_jpeg = save(
        Image.new("CMYK", (size, size), (0, 255, 0, 0)), tmp_path / "cmyk.jpg", quality=100
    )
    assert np.abs(load_image(cmyk_jpeg, size).astype(int) - (255, 0, 255)).max() <= 3

    sixteen = np.full((size, size), 65535, np.uint16)
    sixteen[: size // 2] = 32896  # 128 * 257
    path = save(Image.fromarray(sixteen), tmp_path / "gray16.png")
    with Image.open(path) as image:
        assert image.mode == "I;16"
    pixels = load_image(path, size)
    assert (pixels[0] == 128).all() and (pixels[-1] == 255).all()

    floats = Image.fromarray(np.array([[np.nan, 300.0], [-5.0, 100.4]], np.float32))
    assert load_image(save(floats, tmp_path / "float.tif"), 2)[..., 0].tolist() == [
        [0, 255],
        [0, 100],
    ]

    int32 = Image.fromarray(np.full((size, size), 65535, np.int32))
    assert int32.mode == "I"
    assert (load_image(save(int32, tmp_path / "int32.tif"), size) == 255).all()


def test_images_are_resized_to_a_square(tmp_path):
    wide = save(Image.new("RGB", (40, 10), (10, 20, 30)), tmp_path / "wide.png")
    pixels = load_image(wide, 16)
    assert pixels.shape == (16, 16, 3) and (pixels == (10, 20, 30)).all()


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    wide = Image.new("RGB", (32, 16), (255, 0, 0))
    wide.paste((0, 0, 255), (16, 0, 32, 16))  # left red, right blue as stored
    exif = wide.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(
        wide,
        tmp_path / f"rotated.{suffix}",
        exif=exif.tobytes(),
        **({"quality": 95} if suffix == "jpg" else {}),
    )
    pixels = load_image(path, 16).astype(int)
    # Displayed upright it is tall: red on top, blue at the bottom.
    assert pixels[2, 8, 0] > 200 and pixels[2, 8, 2] < 60
    assert pixels[-3, 8, 2] > 200 and pixels[-3, 8, 0] < 60


def truncated_copy(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def noisy_image(size=64, seed=0):
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    )


def assert_image_error(function, path, kind, *words):
    with pytest.raises(ImageError) as error:
        function(path)
    message = str(error.value)
    assert error.value.kind == kind, message
    assert message.startswith(str(path)) and "\n" not in message
    for word in words:
        assert word in message, message
    assert isinstance(error.value, UsageError)


def test_bad_image_files_raise_one_line_errors(tmp_path):
    load = lambda path: load_image(path, 16)  # noqa: E731
    assert_image_error(load, tmp_path / "nope.png", "missing", "no such file")
    assert_image_error(load, tmp_path, "directory", "directory")
    assert_image_error(check_image, tmp_path / "nope.png", "missing")

    png = save(noisy_image(), tmp_path / "good.png")
    truncated_png = truncated_copy(png, tmp_path / "truncated.png")
    assert_image_error(check_image, truncated_png, "corrupt", "truncated")
    assert_image_error(load, truncated_png, "corrupt", "truncated")

    jpeg = save(noisy_image(), tmp_path / "good.jpg")
    truncated_jpeg = truncated_copy(jpeg, tmp_path / "truncated.jpg")
    check_image(truncated_jpeg)  # verify() cannot see it (documented) ...
    assert_image_error(load, truncated_jpeg, "corrupt", "truncated")  # ... decoding can

    broken_header = tmp_path / "header.png"
    broken_header.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert_image_error(load, broken_header, "corrupt", "PNG")

    text = tmp_path / "notes.jpg"
    text.write_text("these are not the pixels you are looking for\n")
    assert_image_error(load, text, "not_image", "text file")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert_image_error(load, empty, "not_image", "empty")
    binary = tmp_path / "random.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert_image_error(load, binary, "not_image", "not an image")

    heic = tmp_path / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    assert_image_error(load, heic, "unsupported", "HEIC")
    lab = save(Image.new("LAB", (4, 4)), tmp_path / "lab.tif")
    assert_image_error(load, lab, "unsupported", "LAB")
    assert_image_error(check_image, lab, "unsupported", "LAB")


def test_decompression_bomb_limit_stays_on(tmp_path, monkeypatch):
    path = save(noisy_image(64), tmp_path / "big.png")  # 4096 pixels
    assert Image.MAX_IMAGE_PIXELS is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # above the limit: Pillow only warns
    assert_image_error(lambda p: load_image(p, 16), path, "too_large", "decompression-bomb")
    assert_image_error(check_image, path, "too_large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # above twice the limit: Pillow raises
    assert_image_error(lambda p: load_image(p, 16), path, "too_large", "decompression-bomb")


# ---------------------------------------------------------------------------------------------
# Caption files


def copy_dataset(source, target):
    for relative, data in snapshot(source).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return target


def test_read_shapes_coco_files(shapes_dir):
    log = Log()
    records = read_coco_captions(
        shapes_dir / "annotations" / "captions_train.json", shapes_dir / "images", log=log
    )
    assert len(records) == 16 and not log
    for record in records:
        assert len(record.captions) == 5 and os.path.exists(record.path)
        assert record.scene is not None and all(
            caption_is_correct(c, record.scene) for c in record.captions
        )
    assert (
        read_captions(
            shapes_dir / "annotations" / "captions_val.json",
            shapes_dir / "images",
            split="ignored-for-coco",
            log=log,
        )[0].image_id
        == 17
    )
    pixels, kept = load_record_images(records, 32, log=log)
    assert pixels.shape == (16, 32, 32, 3) and pixels.dtype == np.uint8 and kept == records
    image_indices, token_lists = caption_rows(records)
    assert len(token_lists) == 80 and list(image_indices[:6]) == [0, 0, 0, 0, 0, 1]


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"images": [], "annotations": [}', ["not valid JSON", "line 1, column 32"]),
        ('{\n  "images": [],\n  "annotations": [\n    {"id": 1,}\n  ]\n}', ["line 4, column 14"]),
        ("", ["empty"]),
        ("[1, 2]", ["top level is a JSON list"]),
        ('{"images": []}', ["missing top-level key 'annotations'"]),
        ('{"annotations": []}', ["missing top-level key 'images'"]),
        ('{"images": [{"id": 1}], "annotations": []}', ["images[0]", "'file_name'"]),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], '
            '"annotations": [{"id": 5, "image_id": 1}]}',
            ["annotations[0]", "'caption'"],
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], '
            '"annotations": [{"id": 5, "image_id": 1, "bbox": [0, 0, 1, 1]}]}',
            ["instances"],
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], '
            '"annotations": [{"id": 5, "image_id": 1, "caption": 7}]}',
            ["annotations[0] (id 5)", "expected text"],
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}], '
            '"annotations": []}',
            ["image id 1 appears twice"],
        ),
    ],
)
def test_bad_annotation_files(tmp_path, content, words):
    path = tmp_path / "captions.json"
    path.write_text(content)
    with pytest.raises(UsageError) as error:
        read_coco_captions(path, tmp_path, log=Log())
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message


def test_binary_or_missing_annotation_file(tmp_path):
    binary = tmp_path / "captions.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_coco_captions(binary, tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        read_coco_captions(tmp_path / "missing.json", tmp_path)
    with pytest.raises(UsageError, match="is a directory"):
        read_coco_captions(tmp_path, tmp_path)


def test_unusable_images_and_captions_are_skipped_and_counted(shapes_dir, tmp_path, monkeypatch):
    data_dir = copy_dataset(shapes_dir, tmp_path / "copy")
    images = data_dir / "images"
    annotation_path = data_dir / "annotations" / "captions_train.json"
    annotations = json.loads(annotation_path.read_text())
    names = [image["file_name"] for image in annotations["images"]]
    os.remove(images / names[0])
    os.remove(images / names[1])
    truncated_copy(images / names[2], images / "cut.png")
    os.replace(images / "cut.png", images / names[2])
    (images / names[3]).write_text("not an image")
    noisy_image(128).save(images / names[4])  # 16384 pixels: above the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)
    for annotation in annotations["annotations"]:
        if annotation["image_id"] == annotations["images"][5]["id"]:
            annotation["caption"] = " . "  # all five of image 5 empty: the image goes
    annotations["annotations"][-1]["caption"] = ""  # one empty caption of the last image
    annotations["annotations"].append({"id": 99999, "image_id": 123456, "caption": "an orphan"})
    write_json(annotation_path, annotations)

    log = Log()
    records = read_coco_captions(annotation_path, images, log=log)
    assert len(records) == 16 - 6
    assert len(records[-1].captions) == 4
    text = log.text
    assert "skipped 2 of 16 images whose file is missing" in text
    for name in names[2:5]:
        assert sum(name in line and line.startswith("skipped image") for line in log) == 1, text
    assert "truncated" in text and "decompression-bomb" in text and "text file" in text
    assert "skipped 3 of 16 unusable image file(s)" in text
    assert "skipped 6 empty caption(s)" in text
    assert "skipped 1 of 16 images with no (non-empty) caption" in text
    assert "ignored 1 caption(s) whose image_id is not in 'images'" in text


def test_all_images_missing_is_an_error(shapes_dir, tmp_path):
    with pytest.raises(
        UsageError, match="none of the 16 images .* exist under .*check --images-dir"
    ):
        read_coco_captions(shapes_dir / "annotations" / "captions_train.json", tmp_path, log=Log())


def test_truncated_jpeg_is_caught_when_decoded(tmp_path):
    good = save(noisy_image(64, seed=1), tmp_path / "good.jpg")
    truncated_copy(save(noisy_image(64, seed=2), tmp_path / "whole.jpg"), tmp_path / "cut.jpg")
    annotation = write_json(
        tmp_path / "captions.json",
        {
            "images": [{"id": 1, "file_name": "good.jpg"}, {"id": 2, "file_name": "cut.jpg"}],
            "annotations": [
                {"id": 1, "image_id": 1, "caption": "noise"},
                {"id": 2, "image_id": 2, "caption": "noise"},
            ],
        },
    )
    log = Log()
    records = read_coco_captions(annotation, tmp_path, log=log)  # verify() lets it through
    assert len(records) == 2 and not log
    pixels, kept = load_record_images(records, 16, log=log)
    assert [r.path for r in kept] == [str(good)] and pixels.shape == (1, 16, 16, 3)
    assert "cut.jpg" in log.text and "truncated" in log.text
    log = Log()
    assert len(read_coco_captions(annotation, tmp_path, check_images="decode", log=log)) == 1
    assert "cut.jpg" in log.text


def karpathy_file(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "val2014").mkdir()
    entries = []
    for index, (split, folder) in enumerate(
        [
            ("train", "train2014"),
            ("restval", "val2014"),
            ("val", "val2014"),
            ("test", "val2014"),
            ("train", "train2014"),
        ]
    ):
        name = f"COCO_{folder}_{index:012d}.jpg"
        noisy_image(16, seed=index).save(tmp_path / folder / name)
        entries.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": index,
                "cocoid": 1000 + index,
                "split": split,
                "sentids": [2 * index, 2 * index + 1],
                "sentences": [
                    {
                        "raw": f"A picture number {index}.",
                        "tokens": ["a", "picture"],
                        "imgid": index,
                    },
                    {"tokens": ["only", "tokens"], "imgid": index},
                ],
            }
        )
    return write_json(tmp_path / "dataset_coco.json", {"dataset": "coco", "images": entries})


def test_karpathy_split_file(tmp_path):
    path = karpathy_file(tmp_path)
    train = read_karpathy_captions(path, tmp_path, "train", log=Log())
    assert [r.image_id for r in train] == [1000, 1001, 1004]  # train + restval
    assert train[1].path == str(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg")
    assert train[0].captions == ["A picture number 0.", "only tokens"]
    assert [r.image_id for r in read_captions(path, tmp_path, "val", log=Log())] == [1002]
    assert [r.image_id for r in read_captions(path, tmp_path, "test", log=Log())] == [1003]
    with pytest.raises(UsageError, match="unknown split 'dev'"):
        read_karpathy_captions(path, tmp_path, "dev")
    with pytest.raises(UsageError, match="Karpathy split file"):
        read_coco_captions(path, tmp_path)
    only_train = write_json(
        tmp_path / "small.json", {"images": [json.loads(path.read_text())["images"][0]]}
    )
    with pytest.raises(UsageError, match=r"no images in split 'val' \(splits in the file: train\)"):
        read_karpathy_captions(only_train, tmp_path, "val")
    broken = write_json(tmp_path / "broken.json", {"images": [{"split": "train", "sentences": []}]})
    with pytest.raises(UsageError, match="images\\[0\\] has no 'filename' key"):
        read_karpathy_captions(broken, tmp_path, "train")


# ---------------------------------------------------------------------------------------------
# Tokens and vocabulary


def test_tokenize():
    assert tokenize("A man, riding a Horse.") == ["a", "man", ",", "riding", "a", "horse"]
    assert tokenize("The dog's ball...  ") == ["the", "dog's", "ball"]
    assert tokenize("two <pad> signs") == ["two", "<", "pad", ">", "signs"]
    assert tokenize(" . ") == []
    assert caption_text(["a", "man", ",", "riding", "a", "horse"]) == "a man, riding a horse"


def test_vocabulary_min_count_unknown_and_padding(tmp_path):
    captions = ["a red circle", "a red square", "a blue circle.", "a zebra"]
    token_lists = [tokenize(c) for c in captions]
    vocabulary = build_vocabulary(token_lists, min_count=2)
    assert vocabulary.tokens[:4] == list(SPECIALS) and vocabulary.id("<pad>") == 0
    assert vocabulary.tokens[4:] == ["a", "circle", "red"]  # by count, ties by spelling
    assert "zebra" not in vocabulary and "blue" not in vocabulary

    encoded = encode_captions(token_lists, vocabulary, max_length=2)
    assert encoded.shape == (4, 4) and encoded.dtype == np.int32
    start, end, unk = (vocabulary.id(t) for t in ("<start>", "<end>", "<unk>"))
    a, red, circle = (vocabulary.id(t) for t in ("a", "red", "circle"))
    assert encoded[0].tolist() == [start, a, red, end]  # "circle" cut by max_length
    assert encoded[2].tolist() == [start, a, unk, end]  # "blue" is rare -> <unk>
    assert encoded[3].tolist() == [start, a, unk, end]
    long = encode_captions([["a"]], vocabulary, max_length=5)
    assert long.tolist() == [[start, a, end, 0, 0, 0, 0]]  # padded with <pad> = 0
    assert decode_caption(long[0], vocabulary) == ["a"]
    assert decode_caption(encode_captions(token_lists[:1], vocabulary, 8)[0], vocabulary) == [
        "a",
        "red",
        "circle",
    ]

    path = tmp_path / "vocab.json"
    vocabulary.save(path)
    assert Vocabulary.load(path) == vocabulary
    assert build_vocabulary(token_lists, max_size=5).tokens == list(SPECIALS) + ["a"]
    with pytest.raises(UsageError, match="`min_count`"):
        build_vocabulary(token_lists, min_count=0)
    with pytest.raises(UsageError, match="`max_length`"):
        encode_captions(token_lists, vocabulary, max_length=0)
    with pytest.raises(UsageError, match="not a caption vocabulary"):
        encode_captions(token_lists, Vocabulary(["a", "b"]), max_length=3)


def test_data_cli(shapes_dir, tmp_path, capsys):
    vocab = tmp_path / "vocab.json"
    assert (
        coco_data.main(
            [
                "--annotations",
                str(shapes_dir / "annotations" / "captions_train.json"),
                "--images-dir",
                str(shapes_dir / "images"),
                "--min-count",
                "2",
                "--vocab-out",
                str(vocab),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "16 images, 80 captions" in out
    loaded = Vocabulary.load(vocab)
    assert loaded.tokens[:4] == list(SPECIALS) and "circle" in loaded
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert coco_data.main(["--annotations", str(bad), "--images-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "line 1, column 2" in error and error.count("\n") == 1


# ---- --max-objects 4: the harder benchmark set ----


def test_four_object_scenes_have_six_colours_three_sizes_and_correct_captions():
    examples = [shapes.generate_example(3, "train", i, 64, 4)[1:] for i in range(300)]
    objects = [o for scene, _ in examples for o in scene["objects"]]
    assert {len(scene["objects"]) for scene, _ in examples} == {1, 2, 3, 4}
    assert {o["color"] for o in objects} == set(shapes.COLORS_4) and len(shapes.COLORS_4) == 6
    assert {o["size"] for o in objects} == {"small", "medium", "large"}
    for scene, captions in examples:
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            assert caption_is_correct(caption, scene), (caption, scene)
        if len(scene["objects"]) == 4:
            assert [o["x"] for o in scene["objects"]] == sorted(o["x"] for o in scene["objects"])
            phrases = [shapes.object_phrase(o) for o in scene["objects"]]
            swapped = captions[0].replace(phrases[1], "@").replace(phrases[2], phrases[1])
            assert not caption_is_correct(swapped.replace("@", phrases[2]), scene)
            assert not caption_is_correct(captions[0].replace(" and " + phrases[3], ""), scene)
            medium = next((o for o in scene["objects"] if o["size"] == "medium"), None)
            if medium is not None:  # a medium shape called small or large is wrong
                wrong = captions[0].replace(shapes.object_phrase(medium), "a small blue disc")
                assert not caption_is_correct(wrong, scene)


def test_the_default_set_keeps_five_colours_and_two_sizes():
    objects = [o for scene, _ in sample_examples(200) for o in scene["objects"]]
    assert {o["color"] for o in objects} == set(shapes.COLORS)
    assert {o["size"] for o in objects} == set(shapes.SIZES) == {"small", "large"}


def test_max_objects_beyond_four_is_one_line(tmp_path, capsys):
    assert shapes.main(["--out", str(tmp_path / "x"), "--max-objects", "5"]) == 2
    error = capsys.readouterr().err
    assert "--max-objects must be 1, 2, 3 or 4, got 5" in error and error.count("\n") == 1
    argv = ["--out", str(tmp_path / "y"), "--max-objects", "4", "--image-size", "40"]
    assert shapes.main(argv) == 2
    assert "--image-size 48 or more" in capsys.readouterr().err
