"""Atomic writes: a crash or a full disk never leaves a half-written file in place of a good one.

`atomic_write` does it for a file (a rename over the old one), `replace_directory` for a
directory such as a SavedModel export (a rename into place, the old one moved aside first).
"""

import errno
import os
import shutil
import tempfile

from textgen.errors import DiskFull, UsageError

# What a write that does not fit fails with: a full disk, a full quota, a file-size limit.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(error):
    """True for an OSError, or a TensorFlow error, that says the disk (or a quota) is full."""
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        return True
    message = str(error)
    return any(os.strerror(code) in message for code in NO_SPACE)


def size_text(count):
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000


def disk_full(path, needed, intact, fix="free some space and continue with --resume"):
    """The DiskFull error for a write of about `needed` bytes (None: unknown) to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(directory).free if os.path.isdir(directory) else 0
    need = f"it needs about {size_text(needed)}, " if needed else ""
    return DiskFull(
        f"no space left to write {path}: {need}{size_text(free)} are free on that "
        f"disk; {intact}; {fix}"
    )


def export_disk_full(path, variables, command):
    """The DiskFull error of a SavedModel export to `path` that did not fit; what it needs is
    about the variables' bytes. `command` is the export CLI to run once there is space."""
    needed = sum(int(v.numpy().nbytes) for v in variables)
    return disk_full(
        path,
        needed,
        "the checkpoint and any earlier export are intact",
        f"free some space and export with `{command}`",
    )


def atomic_write(path, write, intact="the previous file is intact"):
    """Calls `write(file)` on a temporary file beside `path`, flushes it to disk, then renames it
    over `path`. The rename is atomic on POSIX, so readers see the old file or the new one.
    `write` may also be bytes. A full disk raises DiskFull, `intact` saying what was kept."""
    path = os.fspath(path)
    data = write if isinstance(write, bytes) else None
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(error):
            raise disk_full(path, None if data is None else len(data), intact) from None
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write(path, text.encode("utf-8"))


def check_out_directory(out_directory, overwrite=False):
    """UsageError unless `out_directory` is absent, empty, or may be overwritten."""
    if not os.path.exists(out_directory):
        return
    if not os.path.isdir(out_directory):
        raise UsageError(f"{out_directory} exists and is not a directory; choose another OUT_DIR")
    if os.listdir(out_directory) and not overwrite:
        raise UsageError(
            f"{out_directory} exists and is not empty; pass --overwrite to replace "
            "it, or choose another OUT_DIR"
        )


def replace_directory(out_directory, write):
    """Calls `write(path)` on a fresh temporary directory beside `out_directory`, then renames it
    into place (over an absent or empty directory in one rename; a full one is moved aside)."""
    out_directory = os.path.abspath(out_directory)
    parent, base = os.path.split(out_directory)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes it 0700; give a plain mkdir's mode
        write(temporary)
        if os.path.isdir(out_directory) and os.listdir(out_directory):
            aside = tempfile.mkdtemp(prefix=f".{base}.", suffix=".old", dir=parent)
            os.rename(out_directory, aside)  # over the empty `aside`
            try:
                os.rename(temporary, out_directory)
            except BaseException:
                os.rename(aside, out_directory)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(temporary, out_directory)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
