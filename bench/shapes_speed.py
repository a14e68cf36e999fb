"""Times `captioning.shapes` on 5,000 images (4,500 train + 500 val) in a temporary directory.

python bench/shapes_speed.py [--images 5000] [--image-size 64] [--keep DIR]
"""

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # importing textgen loads TensorFlow

from captioning.shapes import ShapesConfig, generate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=int,
        default=5000,
        help="images in all; a tenth are validation (default: 5000)",
    )
    parser.add_argument(
        "--image-size", type=int, default=64, help="image side in pixels (default: 64)"
    )
    parser.add_argument(
        "--keep", metavar="DIR", help="write into DIR and keep it (default: a temporary directory)"
    )
    args = parser.parse_args()
    out = args.keep or tempfile.mkdtemp(prefix="shapes_speed_")
    val_size = args.images // 10
    config = ShapesConfig(
        out=out, train_size=args.images - val_size, val_size=val_size, image_size=args.image_size
    )
    try:
        start = time.perf_counter()
        generate(config)
        seconds = time.perf_counter() - start
        images_dir = os.path.join(out, "images")
        png_bytes = sum(entry.stat().st_size for entry in os.scandir(images_dir))
        print(
            f"{args.images} images of {args.image_size}x{args.image_size} in {seconds:.1f} s "
            f"({1000 * seconds / args.images:.2f} ms each, one process); "
            f"PNGs {png_bytes / args.images / 1024:.1f} KiB on average, "
            f"{png_bytes / 2**20:.1f} MiB in all"
        )
    finally:
        if not args.keep:
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
