"""The layout of a token sequence for stateful truncated BPTT (`StreamBatches`), the
train/validation split and the bounded validation pass."""

import numpy as np

from textgen.config import VAL_MAX_TOKENS_FLOOR
from textgen.errors import UsageError


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

    `remap`, a table of int32 ids, maps the ids of `ids` to the run's ids (`remap[ids]`) in
    that copy, one batch at a time: a corpus prepared with another vocabulary than the run's
    (a fine-tuning run's merged one, or the run's own on --resume) stays a memory map.
    """

    def __init__(self, ids, batch_size, seq_length, remap=None):
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
        self.remap = None if remap is None else np.asarray(remap, dtype=np.int32)

    def __len__(self):
        return self.num_batches

    @property
    def tokens_per_batch(self):
        return self.batch_size * self.seq_length

    def __getitem__(self, k):
        if not 0 <= k < self.num_batches:
            raise IndexError(k)
        cut = slice(k * self.seq_length, (k + 1) * self.seq_length)
        if self.remap is not None:  # indexing copies, into a C-contiguous int32 array
            return self.remap[self.inputs[:, cut]], self.remap[self.targets[:, cut]]
        return (
            np.ascontiguousarray(self.inputs[:, cut], dtype=np.int32),
            np.ascontiguousarray(self.targets[:, cut], dtype=np.int32),
        )

    def __iter__(self):
        for k in range(self.num_batches):
            yield self[k]
