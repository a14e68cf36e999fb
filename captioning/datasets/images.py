"""Image files -> uint8 RGB arrays, through Pillow, with a one-line ImageError for every bad file.

`load_image(path, image_size)` returns uint8 [image_size, image_size, 3] (uint8, not float: a
data set held in memory is 4x smaller, and the model scales pixels itself). On the way:

* EXIF orientation is applied (`ImageOps.exif_transpose`), so phone photos stand upright. An
  unreadable EXIF block is ignored: the pixels are still good.
* Every mode becomes RGB: 1/L/P/CMYK/YCbCr through Pillow's `convert`; images with alpha (RGBA,
  LA, PA, P with a transparent colour) are composited on white, because transparent areas of
  icons and cut-outs are drawn to be seen on a white page and the colours stored under alpha 0
  are arbitrary (often black); 16-bit (I;16*) and 32-bit integer (I) images are scaled from
  0..65535 to 0..255 (Pillow's own convert would clip them); float (F) images are clipped to
  0..255 as Pillow's convert("L") does. Other modes (LAB, HSV, ...) raise ImageError.
* The image is resized to a square (the aspect ratio is not kept: cropping could cut away an
  object the captions mention). JPEGs are decoded at reduced scale when much larger than needed.
* Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) stays on, and its warning (images
  between 1x and 2x the limit) is treated like its error: both raise ImageError.

`check_image(path)` is the cheap test used when reading annotations: it opens the file and runs
Pillow's `verify()` (headers, PNG chunk checksums and truncation) without decoding the pixels. A
truncated JPEG passes it; that is caught when the pixels are decoded (`load_image`).
"""

import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from textgen.errors import UsageError

# What Pillow raises from a damaged file while parsing or decoding it.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
)

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageError(UsageError):
    """An image file that cannot be used. `kind` is one of: missing, directory, unreadable,
    not_image, unsupported, corrupt, too_large; the message is '<path>: <problem>; <fix>'."""

    def __init__(self, path, kind, problem):
        self.path = os.fspath(path)
        self.kind = kind
        self.problem = " ".join(str(problem).split())  # one line, whatever Pillow said
        super().__init__(f"{self.path}: {self.problem}")


def sniff_format(head):
    """A name for the kind of file `head` (its first bytes) starts, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC"
        return "MP4/QuickTime video"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL"
    if head.startswith(b"%PDF"):
        return "PDF"
    if b"<svg" in head[:1024].lower():
        return "SVG"
    return None


def looks_like_utf8(head):
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as error:
        return error.start >= len(head) - 3  # only a character cut off at the end of the sample


def unidentified(path):
    """The ImageError for a file Pillow cannot identify, as specific as its first bytes allow."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError as error:
        return ImageError(path, "unreadable", f"cannot read it ({error.strerror})")
    if not head:
        return ImageError(
            path, "not_image", "the file is empty, not an image; remove it or replace it"
        )
    kind = sniff_format(head)
    if kind in ("PNG", "JPEG", "GIF", "TIFF", "WebP"):
        return ImageError(
            path,
            "corrupt",
            f"corrupt {kind} file (Pillow cannot parse its header); re-download or remove it",
        )
    if kind in ("AVIF", "HEIC", "JPEG XL", "SVG"):
        return ImageError(
            path,
            "unsupported",
            f"{kind} images are not supported by this Pillow; convert it to PNG or JPEG",
        )
    if kind is not None:
        return ImageError(
            path, "not_image", f"a {kind} file, not an image; remove it from the data set"
        )
    if b"\x00" not in head and looks_like_utf8(head):
        return ImageError(
            path, "not_image", "a text file, not an image; remove it from the data set"
        )
    return ImageError(
        path,
        "not_image",
        "not an image file Pillow can read (unrecognised format); "
        "convert it to PNG or JPEG or remove it",
    )


def too_large(path, detail):
    """`detail`: the pixel count, or Pillow's own message (which states size and limit)."""
    if isinstance(detail, int):
        detail = (
            f"image size ({detail} pixels) exceeds the limit of {Image.MAX_IMAGE_PIXELS} pixels"
        )
    detail = str(detail).replace(", could be decompression bomb DOS attack.", "").rstrip(".")
    return ImageError(
        path,
        "too_large",
        f"too large for Pillow's decompression-bomb limit: {detail}; shrink the image or remove it",
    )


def open_image(path):
    """Opens `path` lazily (header only), raising ImageError for every problem visible by then."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ImageError(path, "directory", "is a directory, not an image file")
    try:
        # The filter is only to turn Pillow's warning into an exception here; the size test below
        # is the guarantee (warning filters are process-wide, so another thread may reset them).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise ImageError(path, "missing", "no such file") from None
    except PermissionError:
        raise ImageError(path, "unreadable", "permission denied; make the file readable") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise too_large(path, error) from None
    except UnidentifiedImageError:
        raise unidentified(path) from None
    except DECODE_ERRORS as error:
        raise ImageError(
            path, "corrupt", f"corrupt image header ({error}); re-download or remove it"
        ) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        image.close()
        raise too_large(path, image.width * image.height)
    return image


def check_image(path):
    """Raises ImageError unless `path` opens and passes Pillow's `verify()` (cheap: no pixel
    decoding; catches bad headers, PNG checksum errors and truncated PNGs, not truncated JPEGs)."""
    image = open_image(path)
    try:
        check_mode(path, image.mode)
        image.verify()
    except ImageError:
        raise
    except DECODE_ERRORS as error:
        raise ImageError(
            path, "corrupt", f"corrupt or truncated image ({error}); re-download or remove it"
        ) from None
    finally:
        image.close()


def check_mode(path, mode):
    supported = ("1", "L", "P", "RGB", "CMYK", "YCbCr", "F") + SIXTEEN_BIT_MODES + ALPHA_MODES
    if mode not in supported:
        raise ImageError(path, "unsupported", f"unsupported image mode {mode}; convert it to RGB")


def to_rgb(image):
    """A Pillow image of any supported mode as an RGB image (see the module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        gray = np.clip(np.rint(np.nan_to_num(np.asarray(image))), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")


def load_image(path, image_size):
    """The image at `path` as uint8 [image_size, image_size, 3] RGB; ImageError for a bad file."""
    opened = image = open_image(path)
    try:
        check_mode(path, image.mode)
        image.draft(None, (image_size, image_size))  # JPEG only: decode at 1/2, 1/4, 1/8 scale
        image.load()
        try:
            image = ImageOps.exif_transpose(image)
        except DECODE_ERRORS:
            pass  # a damaged EXIF block: keep the pixels, unrotated
        rgb = to_rgb(image)
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.asarray(rgb, dtype=np.uint8).copy()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_large(path, image.width * image.height) from None
    except DECODE_ERRORS as error:
        raise ImageError(
            path, "corrupt", f"corrupt or truncated image ({error}); re-download or remove it"
        ) from None
    finally:
        opened.close()  # the file itself (multi-frame files keep it open after load())


def load_images(paths, image_size, log=None):
    """Decodes every image: (uint8 [N_kept, image_size, image_size, 3], kept indices into `paths`).

    A bad image is skipped and named through `log` (one line each), so one broken file out of
    thousands does not stop a run; if all of them are bad, that is an ImageError.
    """
    paths = list(paths)
    pixels = np.zeros((len(paths), image_size, image_size, 3), np.uint8)
    kept = []
    last_error = None
    for i, path in enumerate(paths):
        try:
            pixels[len(kept)] = load_image(path, image_size)
        except ImageError as error:
            last_error = error
            if log is not None:
                log(f"skipped image {error}")
            continue
        kept.append(i)
    if paths and not kept:
        raise ImageError(
            last_error.path,
            last_error.kind,
            f"{last_error.problem} (and every other one of the {len(paths)} images failed too)",
        )
    return pixels[: len(kept)], kept
