"""Rebuilds the bundled captioning model, data/models/shapes, and the sample scenes, data/samples.

    python data/models/make_shapes_model.py [--work runs/bundled_shapes]

1. `python -m captioning.shapes --out WORK/data --train-size 5000 --val-size 500 --seed 0`
2. `python -m captioning.train` on it with the default model settings, trained on each scene's
   canonical caption (`--first-captions 1 --captions-per-image 1`, as bench/caption_quality.py
   does), for MAX_STEPS steps: about what 15 minutes reach on a 2-core CPU; a fixed step count
   makes the rebuild repeatable (the cosine learning-rate schedule then follows the steps, not
   the clock);
3. copies what captioning needs into data/models/shapes: config.json (data paths made relative
   to the repository), vocab.json, eval.json and a checkpoint.npz holding only the model's
   weights (no optimizer state: a third of the size; the model cannot be resumed, only used);
4. copies the first SAMPLES validation scenes into data/samples/ with their true scenes.

Run it from the repository root.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

MAX_STEPS = 8800  # about 15 minutes here (bench/caption_quality.py reached 8,778 and 9,192 steps)
SAMPLES = 8
MODEL = os.path.join("data", "models", "shapes")
SAMPLES_DIR = os.path.join("data", "samples")
DEFAULT_WORK = os.path.join("runs", "bundled_shapes")


def run(*command):
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def package(run_directory, out, data_directory):
    """The run's files a captioner needs, with the data paths made relative."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with open(os.path.join(run_directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    # The data paths relative to the repository. A --work outside it is recorded as the default
    # layout: the generator is deterministic, so the default --work holds byte-identical data.
    data_directory = os.path.relpath(data_directory)
    if data_directory.startswith(os.pardir):
        data_directory = os.path.join(DEFAULT_WORK, "data")
    config.update(
        annotations=os.path.join(data_directory, "annotations", "captions_train.json"),
        val_annotations=os.path.join(data_directory, "annotations", "captions_val.json"),
        images=os.path.join(data_directory, "images"),
        val_images="",
        feature_cache="",
        out=out,
        resume=False,
    )
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    for name in ("vocab.json", "eval.json"):
        shutil.copy(os.path.join(run_directory, name), os.path.join(out, name))
    with np.load(os.path.join(run_directory, "checkpoint.npz"), allow_pickle=False) as data:
        kept = {k: data[k] for k in data.files if k == "progress" or k.startswith("model/")}
    np.savez(os.path.join(out, "checkpoint.npz"), **kept)


def copy_samples(data_directory, count=SAMPLES):
    with open(
        os.path.join(data_directory, "annotations", "captions_val.json"), encoding="utf-8"
    ) as f:
        images = json.load(f)["images"][:count]
    if os.path.isdir(SAMPLES_DIR):
        shutil.rmtree(SAMPLES_DIR)
    os.makedirs(SAMPLES_DIR)
    scenes = {}
    for image in images:
        shutil.copy(
            os.path.join(data_directory, "images", image["file_name"]),
            os.path.join(SAMPLES_DIR, image["file_name"]),
        )
        scenes[image["file_name"]] = image["scene"]
    with open(os.path.join(SAMPLES_DIR, "scenes.json"), "w", encoding="utf-8") as f:
        json.dump(scenes, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        default=DEFAULT_WORK,
        help="directory for the data and the full run (default: runs/bundled_shapes)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=MAX_STEPS, help=f"training steps (default: {MAX_STEPS})"
    )
    args = parser.parse_args(argv)
    data, run_directory = os.path.join(args.work, "data"), os.path.join(args.work, "run")
    python = sys.executable
    run(
        python,
        "-m",
        "captioning.shapes",
        "--out",
        data,
        "--train-size",
        "5000",
        "--val-size",
        "500",
        "--seed",
        "0",
    )
    run(
        python,
        "-m",
        "captioning.train",
        "--annotations",
        os.path.join(data, "annotations", "captions_train.json"),
        "--val-annotations",
        os.path.join(data, "annotations", "captions_val.json"),
        "--images",
        os.path.join(data, "images"),
        "--out",
        run_directory,
        "--epochs",
        "1000",
        "--first-captions",
        "1",
        "--captions-per-image",
        "1",  # the canonical caption
        "--max-steps",
        str(args.max_steps),
        "--no-export",
        "--no-progress",
    )
    package(run_directory, MODEL, data)
    copy_samples(data)
    print(f"wrote {MODEL} and {SAMPLES_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
