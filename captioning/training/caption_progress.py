"""CaptionProgress: the captioner's part of the loop's state (textgen.training.progress), saved in
every checkpoint."""

import dataclasses

from textgen.training.progress import Progress


@dataclasses.dataclass
class CaptionProgress(Progress):
    fine_tuning: bool = False  # the backbone is unfrozen and has its own optimizer
    # The self-critical statistics of the current epoch's steps so far (summed as
    # captioning.training.self_critical.STATISTICS lists them; None before its first SCST step),
    # their count and time, so that a resumed epoch reports what an uninterrupted one would.
    scst_sums: list | None = None
    scst_steps: int = 0
    scst_seconds: float = 0.0

    def start_epoch(self):
        super().start_epoch()
        self.scst_sums, self.scst_steps, self.scst_seconds = None, 0, 0.0

    def add_self_critical_step(self, statistics, seconds):
        sums = self.scst_sums or [0.0] * len(statistics)
        self.scst_sums = [a + b for a, b in zip(sums, statistics)]
        self.scst_steps += 1
        self.scst_seconds += seconds
