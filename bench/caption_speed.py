"""Captions per second through an exported captioning SavedModel, on this machine's CPU.

    python bench/caption_speed.py [--model data/models/shapes] [--repeats 5] [--images 64]

For each model, the SavedModel's `caption` signature is called with PNG bytes (decode, resize, CNN,
Wih and beam search all in the graph, as a server would run it):
  * batch 1, beam 3  (one request at a time: latency-bound)
  * batch 32, beam 3 (a batch of requests)
Models: the bundled shapes model (64x64 input; exported to a temporary directory first) and a
`mobilenet_v3_small` captioner with random weights at 224x224 (the size class of real users'
encoders; random weights cost the same as trained ones). Reported: images per second, median of
`--repeats` timed runs after one warm-up call. Target: >= 30 images/s at batch 32, beam 3, for the
bundled model.
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

TARGET = 30.0


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
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from captioning.inference.saved_model import export_saved_model
    from captioning.models.captioner import Captioner

    bundled = Captioner.from_run_directory(args.model)
    results = {"cpu_count": os.cpu_count(), "images_per_run": args.images}
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
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
