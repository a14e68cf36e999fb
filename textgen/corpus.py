"""Reading a corpus and laying it out for stateful truncated BPTT."""

import codecs
import os

import numpy as np

from textgen.errors import UsageError


def read_text(path, encoding="utf-8", keep_newlines=False):
    """The text of `path` as Unicode code points.

    A UTF-8 byte-order mark is dropped and `\\r\\n` becomes `\\n` (unless `keep_newlines`), so a
    corpus saved on Windows gives the same vocabulary as the same corpus saved on Linux.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; pass --data with the path of a text file")
    if not os.path.exists(path):
        raise UsageError(
            f"corpus file {path} does not exist; pass --data with the path of a text file"
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"unknown encoding {encoding!r}; pass --encoding with a Python codec name "
            "such as utf-8, gbk, gb18030, big5, latin-1 or utf-16"
        ) from None
    with open(path, "rb") as f:
        raw = f.read()
    if not raw:
        raise UsageError(f"corpus file {path} is empty; pass --data with a non-empty text file")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        bad = raw[error.start : error.end].hex(" ")
        raise UsageError(
            f"{path}: line {line}, column {column}, byte offset {error.start}: bytes {bad} are not "
            f"valid {encoding}; pass --encoding with the file's codec (e.g. latin-1, gbk, utf-16)"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not keep_newlines:
        text = text.replace("\r\n", "\n")
    if not text:
        raise UsageError(
            f"corpus file {path} holds no text; pass --data with a non-empty text file"
        )
    return text


def split_train_validation(ids, val_fraction):
    """Train is the head, validation the contiguous tail, so no validation text leaks into
    training."""
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def minimum_corpus_length(batch_size, seq_length, val_fraction):
    """The shortest corpus that gives one training batch and one validation row."""
    n = batch_size * seq_length + seq_length + 2
    while True:
        n_val = int(round(n * val_fraction))
        if n - n_val - 1 >= batch_size * seq_length and n_val - 1 >= seq_length:
            return n
        n += 1


class StreamBatches:
    """A token sequence laid out as `batch_size` contiguous streams, cut into `seq_length` chunks.

    Row r of batch k+1 continues row r of batch k, so the recurrent state that row r reaches at the
    end of batch k is the right initial state for row r of batch k+1. Targets are the inputs
    shifted by one token. The tail that does not fill a whole batch is dropped.
    """

    def __init__(self, ids, batch_size, seq_length):
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
        return self.inputs[:, cut], self.targets[:, cut]

    def __iter__(self):
        for k in range(self.num_batches):
            yield self[k]
