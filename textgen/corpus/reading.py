"""Reading a corpus file in chunks, in any codec, with errors that name the line, column and
byte offset."""

import codecs
import os

from textgen.errors import UsageError

# Bytes read and decoded at a time: large enough that per-chunk Python overhead vanishes, small
# enough that a chunk's text, its code points and its token ids stay a few tens of MB.
CHUNK_BYTES = 4 << 20


def check_corpus_file(path, encoding, allow_empty=False):
    """UsageError unless `path` is an existing file, non-empty unless `allow_empty` (one file
    of several), and `encoding` a text codec."""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; pass `data` with the path of a text file")
    if not os.path.exists(path):
        raise UsageError(
            f"corpus file {path} does not exist; pass `data` with the path of a text file"
        )
    try:
        text_codec = codecs.lookup(encoding)._is_text_encoding
    except LookupError:
        text_codec = False
    if not text_codec:
        raise UsageError(
            f"unknown encoding {encoding!r}; pass `encoding` with a Python codec name "
            "such as utf-8, gbk, gb18030, big5, latin-1 or utf-16"
        )
    if os.path.getsize(path) == 0 and not allow_empty:
        raise UsageError(f"corpus file {path} is empty; pass `data` with a non-empty text file")


def decode_error(path, encoding, offset, bad):
    """The one-line error for bytes `bad` at byte `offset` of `path` that are not `encoding`:
    line and column are counted by reading the file again up to `offset`, which only the error
    path pays for."""
    line, line_start, position = 1, 0, 0
    with open(path, "rb") as f:
        while position < offset:
            block = f.read(min(CHUNK_BYTES, offset - position))
            if not block:
                break
            newlines = block.count(b"\n")
            if newlines:
                line += newlines
                line_start = position + block.rfind(b"\n") + 1
            position += len(block)
    column = offset - line_start + 1
    return UsageError(
        f"{path}: line {line}, column {column}, byte offset {offset}: bytes {bad.hex(' ')} are not "
        f"valid {encoding}; pass `encoding` with the file's codec (e.g. latin-1, gbk, utf-16)"
    )


def read_chunks(path, encoding="utf-8", keep_newlines=False, chunk_bytes=None, on_bytes=None):
    """The text of `path` as Unicode code points, in chunks of about `chunk_bytes` bytes.

    A UTF-8 byte-order mark is dropped and `\\r\\n` becomes `\\n` (unless `keep_newlines`), so a
    corpus saved on Windows gives the same vocabulary as the same corpus saved on Linux. Chunks
    split the text anywhere (never between `\\r` and `\\n`). `on_bytes(raw)` sees every block of
    raw bytes read (a hash, a progress bar). A byte sequence that does not decode is a
    UsageError with its line, column and byte offset.
    """
    path = os.fspath(path)
    check_corpus_file(path, encoding)
    chunk_bytes = chunk_bytes or CHUNK_BYTES  # read at call time: tests make chunks tiny
    decoder = codecs.getincrementaldecoder(encoding)()
    consumed, first, held = 0, True, ""
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = not raw
            pending = decoder.getstate()[0]
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as error:
                offset = consumed - len(pending) + error.start
                bad = error.object[error.start : error.end]
                raise decode_error(path, encoding, offset, bad) from None
            consumed += len(raw)
            if on_bytes is not None and raw:
                on_bytes(raw)
            if first and text:
                first = False
                if text.startswith("\ufeff"):
                    text = text[1:]
            text = held + text
            held = ""
            if not keep_newlines:
                if text.endswith("\r") and not final:
                    text, held = text[:-1], "\r"  # its \n may start the next chunk
                if "\r" in text:  # the search is 10x cheaper than a replace that finds nothing
                    text = text.replace("\r\n", "\n")
            if text:
                yield text
            if final:
                return


def read_text(path, encoding="utf-8", keep_newlines=False):
    """The whole text of `path` (see `read_chunks`); UsageError if it holds none."""
    text = "".join(read_chunks(path, encoding, keep_newlines))
    if not text:
        raise UsageError(
            f"corpus file {path} holds no text; pass `data` with a non-empty text file"
        )
    return text
