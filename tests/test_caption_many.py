"""`python -m captioning.caption` on many images with one model load: folders, glob patterns and
--list give the captions of the same files typed one by one, in the same order; bad files and
empty patterns are one line each; --results writes COCO results with the right image ids; the
decoding pipeline keeps the order and decodes the next batch while the model runs; the progress
bar is drawn in a terminal. The bundled model captions a handful of generated shapes scenes."""

import io
import json
import os
import random
import re
import sys
import time

import numpy as np
import pytest
from PIL import Image

from captioning import caption, shapes
from captioning.datasets import images
from captioning.inference import image_pipeline
from captioning.inference.loading import BUNDLED_MODEL, DecodeOptions, caption_files
from helpers import one_error_line, run_main
from test_terminal import ANSI, run_in_terminal

pytestmark = pytest.mark.skipif(
    not os.path.isdir(BUNDLED_MODEL), reason="no bundled model in this checkout"
)


def scene(index):
    pixels, _, _ = shapes.generate_example(3, "val", index, 64)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """scenes/ with top-level images of three formats (one extension in capitals), two more in
    scenes/more/, and what a folder walk leaves out: a hidden file, a hidden folder, a text file."""
    root = tmp_path_factory.mktemp("many") / "scenes"
    (root / "more").mkdir(parents=True)
    (root / ".cache").mkdir()
    scene(1).save(root / "scene_000001.png")
    scene(2).save(root / "scene_000002.PNG", "PNG")
    scene(3).save(root / "scene_000003.jpg", quality=95)
    scene(4).save(root / "more" / "scene_000004.png")
    scene(5).save(root / "more" / "scene_000005.png")
    scene(6).save(root / ".hidden_000006.png")
    scene(7).save(root / ".cache" / "scene_000007.png")
    (root / "notes.txt").write_text("not an image\n")
    return root


def walked(folder):
    """The folder's images in the order a walk gives them: a folder's entries sorted by name."""
    names = ["more/scene_000004.png", "more/scene_000005.png", "scene_000001.png"]
    names += ["scene_000002.PNG", "scene_000003.jpg"]
    return [os.path.join(str(folder), *name.split("/")) for name in names]


def cli_json(capsys, *argv):
    status, out, err = run_main(caption.main, capsys, "--json", *argv)
    assert status == 0, err
    assert err == ""  # no bar: standard error is not a terminal
    return [(row["file"], row["caption"]) for row in json.loads(out)]


def plain_captions(capsys, folder):
    """The captions of the walked files, each given as a plain file argument."""
    captions = cli_json(capsys, *walked(folder))
    assert [file for file, _ in captions] == walked(folder)
    assert len({text for _, text in captions}) > 1  # the captions tell the images apart
    return captions


def test_folder_glob_and_list_give_the_captions_of_the_files_in_order(
    folder, tmp_path, capsys, monkeypatch
):
    expected = plain_captions(capsys, folder)
    assert cli_json(capsys, folder) == expected
    # Quoted patterns, as the shell leaves them when it does not expand them itself.
    patterns = [os.path.join(str(folder), "more", "*.png"), os.path.join(str(folder), "scene_*")]
    assert cli_json(capsys, *patterns) == expected

    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(["", *(f"  {path} " for path in walked(folder)), "", ""]) + "\n")
    assert cli_json(capsys, "--list", listing) == expected

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(listing.read_bytes())))
    assert cli_json(capsys, "--list", "-") == expected
    # Arguments first, then the list's paths.
    first, *rest = walked(folder)
    listing.write_text("\n".join(rest) + "\n")
    assert cli_json(capsys, first, "--list", listing) == expected


def test_a_bad_image_is_one_line_and_the_others_are_captioned(folder, tmp_path, capsys):
    expected = plain_captions(capsys, folder)
    corrupt = tmp_path / "scene_000009.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [folder / "more", corrupt, folder / "scene_*", empty, tmp_path / "nothing_*.png"]
    status, out, err = run_main(caption.main, capsys, "--json", *argv)
    assert status == 1
    assert [(row["file"], row["caption"]) for row in json.loads(out)] == expected
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), err
    # In the order of the arguments, each naming its file, folder or pattern.
    assert f"{corrupt}: corrupt PNG" in lines[0]
    assert f"{empty}: is a directory with no image files in it" in lines[1]
    assert f"{tmp_path / 'nothing_*.png'}: no file matches this pattern" in lines[2]


def test_bad_arguments_are_one_line(folder, tmp_path, capsys):
    for argv, fragments in (
        ([], ("no images given", "--list FILE")),
        (["--list", tmp_path / "missing.txt"], ("--list", "missing.txt: no such file")),
        ([folder, "--workers", -1], ("--workers must be >= 0",)),
        ([folder, "--annotations", tmp_path / "a.json"], ("pass --results too",)),
        ([folder, "--results", tmp_path / "nowhere" / "r.json"], ("does not exist",)),
    ):
        status, out, err = run_main(caption.main, capsys, *argv)
        one_error_line(status, err, *fragments)
        assert out == ""


def coco_captions_file(path, files, first_id):
    """A COCO captions file listing `files` (by base name, under another folder) from id
    `first_id` on, with one reference caption each."""
    images = [
        {"id": first_id + i, "file_name": f"val2014/{os.path.basename(f)}"}
        for i, f in enumerate(files)
    ]
    annotations = [
        {"id": i + 1, "image_id": image["id"], "caption": "a shape"}
        for i, image in enumerate(images)
    ]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def read_results(path, annotations):
    """The results file, read as pycocoevalcap reads it (pycocotools' COCO.loadRes, which checks
    that each image_id is one of the annotations' images)."""
    import contextlib

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotations))
        loaded = coco.loadRes(str(path))
    rows = json.loads(path.read_text())
    assert all(set(row) == {"image_id", "caption"} for row in rows)
    assert len(loaded.getImgIds()) == len(rows)
    return [(row["image_id"], row["caption"]) for row in rows]


def test_results_are_coco_results_with_the_image_ids(folder, tmp_path, capsys):
    expected = plain_captions(capsys, folder)
    captions = [text for _, text in expected]
    results = tmp_path / "captions.json"
    # From the names: the number that ends each one.
    status, out, err = run_main(caption.main, capsys, folder, "--results", results)
    assert status == 0, err
    assert err == f"wrote {results}\n"
    named = coco_captions_file(tmp_path / "by_name.json", walked(folder), 1)
    assert read_results(results, named) == list(zip([4, 5, 1, 2, 3], captions))

    # From --annotations: matched by base name, whatever the folder in its file_name.
    annotations = coco_captions_file(tmp_path / "captions_val.json", walked(folder), 1000)
    argv = [folder, "--results", results, "--annotations", annotations]
    status, _, err = run_main(caption.main, capsys, *argv)
    assert status == 0, err
    assert read_results(results, annotations) == list(zip(range(1000, 1005), captions))

    # A file the annotations do not list; a name with no number; two files with one id.
    other = tmp_path / "other"
    other.mkdir()
    scene(8).save(other / "photo.png")
    scene(9).save(other / "val_000001.png")
    for argv, fragments in (
        (
            [folder, other / "val_000001.png", "--annotations", annotations],
            ("lists no image named val_000001.png",),
        ),
        ([other / "photo.png"], ("photo.png: no image id in the file name", "--annotations")),
        (
            [folder, other / "val_000001.png"],
            ("scene_000001.png and ", "val_000001.png both have image id 1", "--annotations"),
        ),
    ):
        results.unlink(missing_ok=True)
        status, out, err = run_main(caption.main, capsys, *argv, "--results", results)
        one_error_line(status, err, *fragments)
        assert not results.exists()


# ---- the pipeline ----


class RecordingModel:
    """A stand-in for a captioner: the caption of an image is the red value of its first pixel,
    and each call waits until the next batch's images are decoded (at most a few seconds)."""

    image_size = 8

    def __init__(self, decoded, batch_size, paths):
        self.decoded, self.batch_size, self.paths = decoded, batch_size, paths
        self.batches, self.overlapped = [], []

    def caption_pixels(self, pixels, options):
        done = sum(len(b) for b in self.batches) + len(pixels)
        following = set(self.paths[done : done + self.batch_size])
        deadline = time.monotonic() + 5
        while not following <= self.decoded and time.monotonic() < deadline:
            time.sleep(0.01)
        self.overlapped.append(following <= self.decoded)
        self.batches.append([int(p[0, 0, 0]) for p in pixels])
        return [str(value) for value in self.batches[-1]], [0.0] * len(pixels)


def test_pipeline_keeps_the_order_and_decodes_the_next_batch_during_the_model(
    tmp_path, monkeypatch
):
    paths = []
    for index in range(11):
        path = tmp_path / f"image_{index:02d}.png"
        Image.new("RGB", (8, 8), (index * 10, 0, 0)).save(path)
        paths.append(str(path))
    (tmp_path / "image_05.png").write_bytes(b"not a PNG")  # one bad file in the middle
    load_image = images.load_image
    decoded = set()
    rng = random.Random(0)

    def slow_load(path, image_size):
        time.sleep(rng.uniform(0, 0.03))  # finish out of order
        pixels = load_image(path, image_size)
        decoded.add(path)
        return pixels

    monkeypatch.setattr(images, "load_image", slow_load)
    good = [p for p in paths if not p.endswith("image_05.png")]
    model = RecordingModel(decoded, 3, good)
    errors, progress = [], []
    results = caption_files(paths, model, DecodeOptions(), 3, errors.append, 4, progress.append)
    assert [r.file for r in results] == good
    assert [r.caption for r in results] == [str(int(p[-6:-4]) * 10) for p in good]
    assert [len(b) for b in model.batches] == [3, 3, 3, 1]  # 10 good images, batches of 3
    assert [str(e.path) for e in errors] == [paths[5]]
    assert sum(progress) == len(paths)
    assert all(model.overlapped), model.overlapped


def test_a_folder_walk_is_sorted_and_leaves_out_hidden_and_non_image_files(folder):
    assert image_pipeline.image_paths([folder]) == walked(folder)


# ---- the progress bar ----


# captioning:  25%|███▌          | 2/8 [00:00<00:01,  3.48img/s]
BAR = re.compile(r"captioning: +\d+%\|[^|]*\| *(?P<n>\d+)/(?P<total>\d+) \[[^\]]*(?P<rate>img/s)\]")


def bar_frames(text):
    """(images done, total) of each frame of the bar: tqdm redraws its line after a \\r."""
    found = (BAR.search(line) for line in re.split(r"[\r\n]+", ANSI.sub("", text)))
    return [(int(match["n"]), int(match["total"])) for match in found if match]


@pytest.mark.integration
def test_progress_bar_in_a_terminal(folder):
    # Batches of 2, so that the bar moves before it is cleared at the end.
    shown = run_in_terminal("captioning.caption", folder, "--batch-size", 2)
    assert shown.returncode == 0 and "Traceback" not in shown.text, str(shown)
    drawn = bar_frames(shown.text)
    assert drawn and {total for _, total in drawn} == {5}, str(shown)
    assert 0 < max(n for n, _ in drawn) <= 5, str(shown)
    assert all(path in shown.text for path in walked(folder))
    hidden = run_in_terminal("captioning.caption", folder, "--no-progress")
    assert hidden.returncode == 0 and bar_frames(hidden.text) == [], str(hidden)
    assert "captioning:" not in hidden.text


def test_decoded_images_match_one_by_one_decoding(folder):
    paths = walked(folder)
    decoded = list(image_pipeline.decoded_images(paths, 64, workers=3, lookahead=2))
    assert [path for path, _ in decoded] == paths
    for path, pixels in decoded:
        np.testing.assert_array_equal(pixels, images.load_image(path, 64))
