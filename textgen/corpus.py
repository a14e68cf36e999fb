"""Reading a corpus in chunks (any codec, clear errors) and laying it out for stateful truncated
BPTT."""

import codecs
import os

import numpy as np

from textgen.config import VAL_MAX_TOKENS_FLOOR
from textgen.errors import UsageError

# Bytes read and decoded at a time: large enough that per-chunk Python overhead vanishes, small
# enough that a chunk's text, its code points and its token ids stay a few tens of MB.
CHUNK_BYTES = 4 << 20


def check_corpus_file(path, encoding):
    """UsageError unless `path` is an existing, non-empty file and `encoding` a text codec."""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; pass --data with the path of a text file")
    if not os.path.exists(path):
        raise UsageError(
            f"corpus file {path} does not exist; pass --data with the path of a text file"
        )
    try:
        text_codec = codecs.lookup(encoding)._is_text_encoding
    except LookupError:
        text_codec = False
    if not text_codec:
        raise UsageError(
            f"unknown encoding {encoding!r}; pass --encoding with a Python codec name "
            "such as utf-8, gbk, gb18030, big5, latin-1 or utf-16"
        )
    if os.path.getsize(path) == 0:
        raise UsageError(f"corpus file {path} is empty; pass --data with a non-empty text file")


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
        f"valid {encoding}; pass --encoding with the file's codec (e.g. latin-1, gbk, utf-16)"
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
            f"corpus file {path} holds no text; pass --data with a non-empty text file"
        )
    return text


def split_train_validation(ids, val_fraction):
    """Train is the head, validation the contiguous tail, so no validation text leaks into
    training."""
    n_val = validation_length(len(ids), val_fraction)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def validation_length(num_tokens, val_fraction):
    return int(round(num_tokens * val_fraction))


def minimum_corpus_length(batch_size, seq_length, val_fraction):
    """The shortest corpus that gives one training batch and one validation row."""
    n = batch_size * seq_length + seq_length + 2
    while True:
        n_val = validation_length(n, val_fraction)
        if n - n_val - 1 >= batch_size * seq_length and n_val - 1 >= seq_length:
            return n
        n += 1


def auto_val_max_tokens(config, steps_per_epoch, tokens_per_batch):
    """--val-max-tokens 0: the larger of VAL_MAX_TOKENS_FLOOR and 0.1 times the tokens trained
    between two evaluations. A validation token cost 0.4 (char level) to 0.7 (word level, its
    softmax) of a training token in bench/corpus_scale.py, so that keeps validation near 5% of
    the training time. Evaluations come every --eval-every
    steps, at every epoch end and when the run stops: with --max-steps the run may be shorter
    than either; with --max-minutes alone its length in steps is not known when the subset is
    fixed, so the floor is taken."""
    interval = min(steps_per_epoch, config.eval_every or steps_per_epoch)
    if config.max_steps:
        interval = min(interval, config.max_steps)
    elif config.max_minutes:
        return VAL_MAX_TOKENS_FLOOR
    return max(VAL_MAX_TOKENS_FLOOR, int(0.1 * interval * tokens_per_batch))


def validation_steps(batches, max_tokens):
    """How many batches of `batches` one validation pass of at most `max_tokens` takes: the
    first ones, so the pass sees the first tokens of every stream, the same every time (at least
    one batch)."""
    return max(1, min(len(batches), max_tokens // batches.tokens_per_batch))


class StreamBatches:
    """A token sequence laid out as `batch_size` contiguous streams, cut into `seq_length` chunks.

    Row r of batch k+1 continues row r of batch k, so the recurrent state that row r reaches at the
    end of batch k is the right initial state for row r of batch k+1. Targets are the inputs
    shifted by one token. The tail that does not fill a whole batch is dropped.

    `ids` may be a memory map of any integer type: `inputs` and `targets` are views of it, and
    only the batch asked for is copied (as int32), so a corpus larger than memory trains.
    """

    def __init__(self, ids, batch_size, seq_length):
        if not isinstance(ids, np.ndarray):
            ids = np.asarray(ids, dtype=np.int32)
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.num_batches = (len(ids) - 1) // (batch_size * seq_length)
        if self.num_batches < 1:
            raise UsageError(
                f"{len(ids)} tokens are too few for batch_size {batch_size} x "
                f"seq_length {seq_length}; need at least {batch_size * seq_length + 1}"
            )
        n = self.num_batches * batch_size * seq_length
        self.inputs = ids[:n].reshape(batch_size, -1)
        self.targets = ids[1 : n + 1].reshape(batch_size, -1)

    def __len__(self):
        return self.num_batches

    @property
    def tokens_per_batch(self):
        return self.batch_size * self.seq_length

    def __getitem__(self, k):
        if not 0 <= k < self.num_batches:
            raise IndexError(k)
        cut = slice(k * self.seq_length, (k + 1) * self.seq_length)
        return (
            np.ascontiguousarray(self.inputs[:, cut], dtype=np.int32),
            np.ascontiguousarray(self.targets[:, cut], dtype=np.int32),
        )

    def __iter__(self):
        for k in range(self.num_batches):
            yield self[k]
