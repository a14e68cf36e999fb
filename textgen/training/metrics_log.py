"""MetricsLog: RUN/metrics.jsonl, the run's losses as an append-only log of JSON lines.

One row per training step and one per evaluation, in the order they happened:

    {"kind": "step", "step": 17, "epoch": 1, "loss": 2.31, "learning_rate": 0.004, "time": ...}
    {"kind": "eval", "reason": "epoch", "step": 313, "epoch": 1, "train": 2.33, "val": 1.83, ...}

`reason` is "epoch" for the evaluation at an epoch's end (the rows the per-epoch history is made
of), "final" for the one of the final weights of a run stopped mid-epoch, and whatever else
evaluates (e.g. every N steps) names itself. `epoch` counts from 1 in eval rows of reason
"epoch" (the epoch just finished) and from 0 in step rows (the epoch the step belongs to).

The log, not the checkpoint, holds the history: a checkpoint's size stays proportional to the
model however long the run. Rows are flushed to the operating system as they are written, so
before every checkpoint, and the log always reaches at least the checkpoint's step however the
process is killed afterwards. (They are not fsync'ed: the checkpoint's own fsync is where a full
disk surfaces, as one line; a row that does not fit is one line too, `DiskFull`.) A resume
truncates it to the checkpoint's step (`open` with `resume_step`), dropping the rows of steps
the killed run made after its last checkpoint, and the resumed run writes them again: the log
is the trajectory of the weights in the checkpoint, each step once.
"""

import json
import os
import time

from textgen.io import disk_full, is_disk_full

FILE = "metrics.jsonl"


def read_rows(path):
    """The log's rows, as dicts. A torn last line (a process killed while writing it) and any
    other line that is not a JSON object are left out; a missing file is no rows."""
    rows = []
    try:
        with open(path, "rb") as f:
            for line in f:
                row = _parse(line)
                if row is not None:
                    rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def _parse(line):
    try:
        row = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def step_losses(rows):
    """The training loss of every step, in step order."""
    return [row["loss"] for row in rows if row.get("kind") == "step"]


def evaluations(rows, reason=None):
    """The eval rows, all of them or those of one `reason`."""
    return [
        row
        for row in rows
        if row.get("kind") == "eval" and (reason is None or row.get("reason") == reason)
    ]


def history(rows):
    """One row per finished epoch: its training and validation losses, its learning rate."""
    return evaluations(rows, "epoch")


def truncate(path, last_step):
    """Cuts the log after the last row whose step is at most `last_step` (the rows are in step
    order), and at a torn or damaged line, in place: one truncate call, so a crash leaves
    either the old log or the cut one. Returns the rows kept."""
    kept, offset = [], 0
    try:
        with open(path, "rb") as f:
            for line in f:
                row = _parse(line)
                if row is None or row["step"] > last_step or not line.endswith(b"\n"):
                    break
                kept.append(row)
                offset += len(line)
    except FileNotFoundError:
        return kept
    if offset < os.path.getsize(path):
        os.truncate(path, offset)
    return kept


def legacy_rows(progress):
    """Rows for the loss history that checkpoints held before the log existed."""
    rows = [
        {"kind": "step", "step": index + 1, "loss": loss}
        for index, loss in enumerate(progress.get("step_losses", []))
    ]
    for entry in progress.get("history", []):
        row = {"kind": "eval", "reason": "epoch", "step": entry.get("global_step", 0)}
        row.update({k: v for k, v in entry.items() if k != "global_step"})
        rows.append(row)
    rows.sort(key=lambda row: (row["step"], row["kind"] == "eval"))
    return rows


class MetricsLog:
    """The log of one run directory. `write` False (a worker other than the chief, which writes
    nothing) keeps the rows in memory only. The step losses since the run began stay in memory
    too, as plain floats, for the TrainResult."""

    def __init__(self, directory, write=True):
        self.path = os.path.join(os.fspath(directory), FILE)
        self.write = write
        self._file = None
        self.losses = []
        self.history = []
        self.last_evaluation = None

    def open(self, resume_step=None, legacy=None):
        """Starts the log of a new run (an empty file), or continues a resumed one from
        `resume_step`, the checkpoint's global step. `legacy`: the "step_losses" and "history"
        of a checkpoint from before the log, which start the log when it does not exist."""
        if resume_step is None:
            rows = []
            if self.write:
                open(self.path, "wb").close()
        elif legacy and not os.path.exists(self.path):
            rows = legacy_rows(legacy)
            if self.write:
                with open(self.path, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            rows = truncate(self.path, resume_step) if self.write else read_rows(self.path)
            rows = [row for row in rows if row["step"] <= resume_step]
        self.losses = step_losses(rows)
        self.history = history(rows)
        evaluated = evaluations(rows)
        self.last_evaluation = evaluated[-1] if evaluated else None
        if self.write:
            self._file = open(self.path, "a", encoding="utf-8")
        return self

    def _append(self, row):
        row["time"] = round(time.time(), 3)
        if self._file is not None:
            try:
                self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
                self._file.flush()
            except OSError as error:
                if not is_disk_full(error):
                    raise
                raise disk_full(self.path, None, "the last checkpoint is intact") from None

    def step(self, step, epoch, loss, learning_rate, **fields):
        self.losses.append(loss)
        self._append(
            {
                "kind": "step",
                "step": step,
                "epoch": epoch,
                "loss": loss,
                "learning_rate": learning_rate,
                **fields,
            }
        )

    def evaluation(self, reason, step, epoch, val, **fields):
        """An eval row: the validation loss `val` (nats/token) and any further `fields` (the
        epoch's training loss, bits per character, perplexity, the learning rate, seconds)."""
        row = {"kind": "eval", "reason": reason, "step": step, "epoch": epoch, "val": val}
        row.update(fields)
        self._append(row)
        if reason == "epoch":
            self.history.append(row)
        self.last_evaluation = row
        return row

    def flush(self):
        """Hands every row written so far to the operating system; called before each
        checkpoint is written (rows are flushed as they are written: this says so)."""
        if self._file is not None:
            self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
