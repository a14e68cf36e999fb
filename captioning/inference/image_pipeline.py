"""Many images in, decoded pixels out, in the order given, while the model works on the one before.

`image_paths(arguments)` turns what a user typed into image files: a file stays as it is (a
missing one is reported later, where it is opened), a folder becomes the files under it whose
extension Pillow can open (recursively, sorted, hidden files and folders left out), and a glob
pattern the shell left unexpanded ('photos/*.jpg', or any pattern the shell never saw) becomes
its matches, each treated as if it had been typed. `read_path_list` reads `--list`, whose lines
are taken literally (no patterns), folders walked.

`decoded_images(paths, image_size, workers, lookahead)` decodes and resizes on a pool of threads
(Pillow releases the GIL while it decodes and resizes, and TensorFlow while it runs the model)
and yields the images in input order, keeping up to `lookahead` images submitted ahead of the one
it yields: with two batches' worth, the next batch is being decoded while the caller captions
this one.
"""

import collections
import glob
import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from textgen.errors import UsageError

# More threads than this do not help: with JPEG draft mode an image costs about a millisecond to
# decode, and the model needs the cores.
MOST_DEFAULT_WORKERS = 4
# What a "no image files" line lists: the common ones, not Pillow's 80-odd extensions.
SHOWN_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


def default_workers():
    return min(MOST_DEFAULT_WORKERS, os.cpu_count() or 1)


def openable_extensions():
    """The file extensions ('.jpg', '.png', ...) of the formats this Pillow can open, lowercase."""
    from PIL import Image

    return {
        extension.lower()
        for extension, image_format in Image.registered_extensions().items()
        if image_format in Image.OPEN  # not the formats Pillow only writes (PDF, ...)
    }


def is_hidden(name):
    return name.startswith(".")


def images_in_folder(folder, extensions):
    """The image files under `folder`, sorted by their path's components (a folder's files next
    to its subfolders' in name order, as `ls -R` would list them)."""
    found = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not is_hidden(name)]
        found.extend(
            os.path.join(parent, name)
            for name in names
            if not is_hidden(name) and os.path.splitext(name)[1].lower() in extensions
        )
    return sorted(found, key=lambda path: os.path.relpath(path, folder).split(os.sep))


def image_paths(arguments, patterns=True):
    """The image files that `arguments` (files, folders and, with `patterns`, glob patterns)
    stand for, in order. A folder without images or a pattern without matches stays in the list
    as it is, so that its error line (`explained`) comes in its turn, where it is decoded."""
    extensions = openable_extensions()
    paths = []

    def expand(argument, pattern_allowed):
        if os.path.isdir(argument):
            paths.extend(images_in_folder(argument, extensions) or [argument])
        elif pattern_allowed and not os.path.lexists(argument) and glob.has_magic(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            for match in matches:
                expand(match, pattern_allowed=False)  # a match is a real name, '[' and all
            if not matches:
                paths.append(argument)
        else:
            paths.append(argument)  # a file, or a missing one: load_image names the problem

    for argument in arguments:
        expand(os.fspath(argument), patterns)
    return paths


def explained(error):
    """The ImageError of a path from `image_paths`, saying why a folder or pattern gave nothing."""
    from captioning.datasets.images import ImageError

    if not isinstance(error, ImageError):
        return error
    if error.kind == "directory":
        return ImageError(
            error.path,
            "directory",
            "is a directory with no image files in it or below it (looked for "
            f"{', '.join(SHOWN_EXTENSIONS)}, ...); pass another folder",
        )
    if error.kind == "missing" and glob.has_magic(error.path):
        return ImageError(
            error.path, "missing", "no file matches this pattern; check the folder and the spelling"
        )
    return error


def read_path_list(path, stdin=None):
    """The image paths in the file `path` (`-`: `stdin`, by default the process's standard
    input), one per line; blank lines are skipped and each line stripped of surrounding spaces.
    Bytes that are not UTF-8 are kept as the file system's own (os.fsdecode)."""
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin
        raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        lines = raw.splitlines()
    else:
        if os.path.isdir(path):
            raise UsageError(
                f"`list` {path} is a folder; pass a text file with one image path per line, or "
                "the folder itself as an image argument"
            )
        try:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise UsageError(
                f"`list` {path}: no such file; pass a text file with one image path per line "
                "(- reads them from standard input)"
            ) from None
        except OSError as error:
            raise UsageError(f"`list` {path}: cannot read it ({error.strerror})") from None
    names = (os.fsdecode(line) if isinstance(line, bytes) else line for line in lines)
    return [name.strip() for name in names if name.strip()]


def decoded_images(paths, image_size, workers=0, lookahead=64):
    """Yields (path, uint8 [image_size, image_size, 3] or the ImageError of that file) for each
    of `paths`, in order, decoded on `workers` threads (0: `default_workers()`), at most
    `lookahead` images ahead of the one yielded."""
    from captioning.datasets.images import ImageError, load_image

    if workers < 0:
        raise UsageError(f"`workers` must be >= 0 (0 means {default_workers()}), got {workers}")

    def load(path):
        try:
            return load_image(path, image_size)
        except ImageError as error:
            return error  # reported in its turn, by the caller, so that the lines come in order

    remaining = iter(paths)
    pending = collections.deque()
    with ThreadPoolExecutor(workers or default_workers(), "decode") as pool:

        def submit(count):
            for path in itertools.islice(remaining, count):
                pending.append((path, pool.submit(load, path)))

        submit(max(1, lookahead))
        try:
            while pending:
                path, future = pending.popleft()
                pixels = future.result()
                # Refilled before yielding: the caller may now run the model for a while.
                submit(1)
                yield path, pixels
        finally:
            for _, future in pending:  # the caller stopped early (an error, or it had enough)
                future.cancel()
