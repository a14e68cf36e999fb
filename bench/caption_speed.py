"""Captions per second through an exported captioning SavedModel, and for a folder of photos
through `captioning.caption`'s own pipeline, on this machine's CPU.

    python bench/caption_speed.py [--model data/models/shapes] [--repeats 5] [--images 64]
    python bench/caption_speed.py --photos 2000 --folder-only   # the folder part alone

For each model, the SavedModel's `caption` signature is called with PNG bytes (decode, resize, CNN,
Wih and beam search all in the graph, as a server would run it):
  * batch 1, beam 3  (one request at a time: latency-bound)
  * batch 32, beam 3 (a batch of requests)
Models: the bundled shapes model (64x64 input; exported to a temporary directory first) and a
`mobilenet_v3_small` captioner with random weights at 224x224 (the size class of real users'
encoders; random weights cost the same as trained ones). Reported: images per second, median of
`--repeats` timed runs after one warm-up call. Target: >= 30 images/s at batch 32, beam 3, for the
bundled model.

A folder of photos (`--photos`, 2,000 by default): JPEGs at 640x480 made from scikit-image's
sample photographs (astronaut, coffee, chelsea, rocket, ...; they ship inside the package), each
a different crop, flip and JPEG quality, written to a temporary folder. The folder is captioned
as `python -m captioning.caption FOLDER` does it (`image_paths`, then `caption_files`: decoding
on worker threads, the next batch while the model captions this one) with the model as the CLI
loads it (a run directory: the bundled one), batch 32, beam 3; against the model alone on the
same images already decoded and resized in memory (`caption_batch` on the same batches). Runs
alternate, median of `--folder-repeats` each. Target: the folder's rate >= 90% of the in-memory
rate (the model's), i.e. reading and decoding the files costs the caller almost nothing.
"""

import argparse
import io
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as textgen sets it (textgen/_quiet_import.py)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from host import describe_host  # noqa: E402

TARGET = 30.0
FOLDER_TARGET = 0.90  # folder rate / in-memory rate
PHOTO_SIZE = (640, 480)
# scikit-image's bundled photographs (skimage.data), no download; grayscale ones become RGB.
SAMPLE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "camera",
    "coins",
    "moon",
    "clock",
    "grass",
    "gravel",
    "brick",
)


def scene_images(count, size, seed=0):
    """PNG bytes of synthetic shapes scenes at `size` x `size`."""
    from captioning import shapes

    images = []
    for index in range(count):
        pixels, _, _ = shapes.generate_example(seed, "val", index, 64)
        image = Image.fromarray(pixels)
        if size != 64:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def images_per_second(signature, images, batch, beam, repeats):
    import tensorflow as tf

    calls = [tf.constant(images[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)]
    beam_size, max_length = tf.constant(beam), tf.constant(20)
    signature(image_bytes=calls[0], beam_size=beam_size, max_length=max_length)  # warm-up, tracing
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for request in calls:
            signature(image_bytes=request, beam_size=beam_size, max_length=max_length)
        rates.append(len(calls) * batch / (time.perf_counter() - start))
    return float(np.median(rates))


def random_mobilenet_captioner(vocabulary):
    import keras

    from captioning.models.captioner import Captioner

    keras.utils.set_random_seed(0)
    model = Captioner(
        vocabulary,
        encoder="mobilenet_v3_small",
        encoder_weights="none",
        hidden_size=256,
        embedding_size=64,
    )
    model.build()
    return model


def sample_photos():
    """[uint8 RGB arrays] of the SAMPLE_PHOTOS this scikit-image has."""
    try:
        from skimage import data
    except ImportError:
        sys.exit("scikit-image is missing: pip install -e '.[bench]' (or pip install scikit-image)")
    photos = []
    for name in SAMPLE_PHOTOS:
        try:
            pixels = getattr(data, name)()
        except Exception:  # a photo this version lacks, or one it would download
            continue
        photos.append(np.asarray(Image.fromarray(pixels).convert("RGB")))
    return photos


def write_photos(folder, count, seed=0):
    """`count` JPEGs of PHOTO_SIZE in `folder`: sample photos, each with its own crop (half to
    all of the photo, 4:3), mirror image or not, and JPEG quality (70-95)."""
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    width, height = PHOTO_SIZE
    for index in range(count):
        photo = Image.fromarray(photos[index % len(photos)])
        scale = rng.uniform(0.5, 1.0)
        crop_width = min(photo.width, round(photo.height * scale * width / height))
        crop_height = round(crop_width * height / width)
        left = int(rng.integers(0, photo.width - crop_width + 1))
        top = int(rng.integers(0, photo.height - crop_height + 1))
        image = photo.crop((left, top, left + crop_width, top + crop_height))
        image = image.resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(
            os.path.join(folder, f"photo_{index:06d}.jpg"),
            "JPEG",
            quality=int(rng.integers(70, 96)),
        )
    return len(photos)


def folder_against_memory(model_path, count, batch_size, workers, repeats):
    """{"folder", "in_memory", "decoding"}: images/s captioning a folder of `count` photos through
    the CLI's pipeline, the model alone on the same images decoded in memory, and the pipeline's
    decoding alone (no model), median of `repeats`."""
    from captioning.datasets.images import load_image
    from captioning.inference.image_pipeline import decoded_images, default_workers, image_paths
    from captioning.inference.loading import (
        DecodeOptions,
        caption_batch,
        caption_files,
        load_caption_model,
    )

    model = load_caption_model(model_path)
    options = DecodeOptions(beam_size=3, max_length=20)
    workers = workers or default_workers()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        kinds = write_photos(folder, count)
        print(
            f"wrote {count} JPEGs of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} from {kinds} sample photos "
            f"in {time.perf_counter() - start:.1f} s",
            flush=True,
        )

        def fail(error):
            raise error

        paths = image_paths([folder])
        assert len(paths) == count, len(paths)
        pixels = np.stack([load_image(path, model.image_size) for path in paths])
        batches = [
            (paths[i : i + batch_size], pixels[i : i + batch_size])
            for i in range(0, count, batch_size)
        ]
        # Warm-up: a full batch and the last, shorter one trace their shapes.
        for batch in {len(p): (p, x) for p, x in batches}.values():
            caption_batch(model, *batch, options)

        def in_memory():
            return [c for p, x in batches for c in caption_batch(model, p, x, options)]

        def from_folder():
            found = image_paths([folder])
            return caption_files(found, model, options, batch_size, fail, workers)

        def decoding():
            return list(decoded_images(paths, model.image_size, workers, 2 * batch_size))

        rates = {"in_memory": [], "folder": [], "decoding": []}
        for repeat in range(repeats):
            for name, run in (
                ("in_memory", in_memory),
                ("folder", from_folder),
                ("decoding", decoding),
            ):
                start = time.perf_counter()
                results = run()
                rates[name].append(count / (time.perf_counter() - start))
                assert len(results) == count
            print(
                f"  run {repeat + 1}: in memory {rates['in_memory'][-1]:6.1f} images/s, "
                f"folder {rates['folder'][-1]:6.1f} images/s, decoding alone "
                f"{rates['decoding'][-1]:6.1f} images/s",
                flush=True,
            )
        # Same captions both ways: the folder's pipeline feeds the model the same pixels.
        assert [r.caption for r in from_folder()] == [r.caption for r in in_memory()]
    return {name: float(np.median(values)) for name, values in rates.items()} | {"workers": workers}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.path.join(ROOT, "data", "models", "shapes"),
        help="run directory of the model to measure (default: the bundled one)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per setting; the median is reported (default: 5)",
    )
    parser.add_argument("--images", type=int, default=64, help="images per timed run (default: 64)")
    parser.add_argument(
        "--photos",
        type=int,
        default=2000,
        help="JPEGs in the folder that is captioned; 0 skips that part (default: 2000)",
    )
    parser.add_argument(
        "--folder-repeats",
        type=int,
        default=3,
        help="timed runs of the folder and of the in-memory images; medians (default: 3)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="decoding threads for the folder (default: 0, as captioning.caption: min(4, CPUs))",
    )
    parser.add_argument(
        "--folder-only",
        action="store_true",
        help="measure only the folder against the in-memory images, not the SavedModels",
    )
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)

    print(describe_host(), flush=True)
    results = {"host": describe_host(), "cpu_count": os.cpu_count()}
    if args.photos:
        rates = folder_against_memory(
            args.model, args.photos, 32, args.workers, args.folder_repeats
        )
        ratio = rates["folder"] / rates["in_memory"]
        print(
            f"folder of {args.photos} JPEGs ({rates['workers']} decoding threads), batch 32, "
            f"beam 3: {rates['folder']:.1f} images/s; the same images in memory: "
            f"{rates['in_memory']:.1f} images/s; ratio {ratio:.1%} (target >= "
            f"{FOLDER_TARGET:.0%}): {'PASS' if ratio >= FOLDER_TARGET else 'FAIL'}; decoding "
            f"alone (no model): {rates['decoding']:.1f} images/s",
            flush=True,
        )
        results["folder"] = {**rates, "photos": args.photos, "ratio": ratio}
    if not args.folder_only:
        results.update(saved_model_rates(args))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


def saved_model_rates(args):
    """The SavedModel part: {setting: images/s}."""
    import tensorflow as tf

    from captioning.inference.saved_model import export_saved_model
    from captioning.models.captioner import Captioner

    bundled = Captioner.from_run_directory(args.model)
    results = {"images_per_run": args.images}
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "bundled shapes model (64x64)": (bundled, 64),
            "mobilenet_v3_small, random weights (224x224)": (
                random_mobilenet_captioner(bundled.vocabulary),
                224,
            ),
        }
        for name, (model, size) in models.items():
            path = os.path.join(tmp, str(len(results)))
            export_saved_model(model, path)
            signature = tf.saved_model.load(path).signatures["caption"]
            images = scene_images(args.images, size)
            for batch in (1, 32):
                rate = images_per_second(signature, images, batch, 3, args.repeats)
                results[f"{name}, batch {batch}, beam 3"] = rate
                print(f"{name:46s} batch {batch:2d}, beam 3: {rate:7.1f} images/s", flush=True)
    key = "bundled shapes model (64x64), batch 32, beam 3"
    print(
        f"target >= {TARGET:.0f} images/s at batch 32, beam 3 (bundled model): "
        f"{'met' if results[key] >= TARGET else 'NOT met'} ({results[key]:.1f})"
    )
    return results


if __name__ == "__main__":
    sys.exit(main())
