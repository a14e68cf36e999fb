"""Progress: where a run stands, the part of the loop's state that is not a tensor.

It is saved as JSON in every checkpoint (`RunDirectory.save_checkpoint`), and a resume continues
from it bit for bit: the epoch and step, the epoch's summed training loss so far (so a resumed
epoch reports the loss an uninterrupted one would), and what a trainer adds (`TextProgress`,
and captioning's own subclass). `to_checkpoint` and `from_checkpoint` are the one place that
writes and reads it.

Checkpoints written before the loss history moved to RUN/metrics.jsonl also hold `step_losses`
and `history`; `from_checkpoint` hands those back apart (`legacy_history`), for the metrics log
to take over.
"""

import dataclasses

# Keys of checkpoints written before RUN/metrics.jsonl existed.
LEGACY_HISTORY_KEYS = ("step_losses", "history")


@dataclasses.dataclass
class Progress:
    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # steps of the current epoch finished
    global_step: int = 0  # steps finished since the run began
    epoch_total: float = 0.0  # summed training loss of the current epoch's steps (nats)
    epoch_count: float = 0.0  # the tokens those steps predicted
    # The best evaluation so far (lowest validation loss, nats/token) and its step; None before
    # the first. Scheduled evaluations (epoch ends, --eval-every) that did not beat it since:
    # --patience stops the run at that many.
    best_val: float | None = None
    best_step: int = 0
    evaluations_since_best: int = 0

    def start_epoch(self):
        """The epoch's loss sums start again (its first step, not a resume within it)."""
        self.epoch_total = self.epoch_count = 0.0

    def add_step(self, total, count):
        self.epoch_total += total
        self.epoch_count += count
        self.step_in_epoch += 1
        self.global_step += 1

    def end_epoch(self):
        self.epoch += 1
        self.step_in_epoch = 0

    def epoch_loss(self):
        """The current epoch's mean training loss (nats/token), NaN before its first step."""
        return self.epoch_total / self.epoch_count if self.epoch_count else float("nan")

    def note_evaluation(self, val, scheduled=True):
        """Records an evaluation of the weights at `global_step`; True when it is the best so
        far. An unscheduled one (the final weights of a run stopped mid-epoch) can be the best
        but does not count towards the patience, so a resumed run counts as a straight one."""
        improved = val == val and (self.best_val is None or val < self.best_val)  # not NaN
        if improved:
            self.best_val, self.best_step = float(val), self.global_step
        if scheduled:
            self.evaluations_since_best = 0 if improved else self.evaluations_since_best + 1
        return improved

    def to_checkpoint(self):
        """A JSON-able dict, every field under its own name."""
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, values):
        """(progress, legacy_history) from a checkpoint's dict. A field the checkpoint lacks (one
        written before the field existed) keeps its default; a key this class does not know is
        left out, so a checkpoint of a newer version still resumes."""
        known = {field.name for field in dataclasses.fields(cls)}
        legacy = {key: values[key] for key in LEGACY_HISTORY_KEYS if key in values}
        return cls(**{key: value for key, value in values.items() if key in known}), legacy


@dataclasses.dataclass
class TextProgress(Progress):
    rng: dict | None = None  # the periodic samples' generator (numpy's bit_generator.state)
