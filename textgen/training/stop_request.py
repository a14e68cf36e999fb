"""StopRequest: SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption) stop training cleanly.

The first signal only sets a flag. The training loop reads it after each step, writes a
checkpoint of that step and exits with 128 + the signal number (130 for SIGINT, 143 for
SIGTERM), so `--resume` continues the same trajectory (TensorFlow's PreemptionCheckpointHandler
idea). A second signal exits at once: the checkpoint on disk is then the last one written, whole,
since every write is atomic.
"""

import signal
import sys
import threading

from textgen.errors import TrainingInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that holds the handlers of SIGINT and SIGTERM while it is open. Signals
    can only be handled on the main thread; elsewhere (a trainer run from a worker thread) it
    installs nothing and never requests a stop."""

    def __init__(self, log=None):
        self.log = log if log is not None else (lambda message: print(message, file=sys.stderr))
        self.signal_number = None
        self._previous = {}

    @property
    def requested(self):
        return self.signal_number is not None

    def error(self, step):
        """The error that ends the process once the checkpoint of `step` is written. A worker
        stopped because another one was signalled exits as if it had had SIGTERM."""
        return TrainingInterrupted(
            f"interrupted at step {step}; checkpoint written; continue with `resume`",
            self.signal_number or signal.SIGTERM,
        )

    def _handle(self, number, frame):
        if self.signal_number is not None:
            self._restore()
            if number == signal.SIGINT:
                raise KeyboardInterrupt
            print(f"stopped by {signal.Signals(number).name}", file=sys.stderr)
            raise SystemExit(128 + number)
        self.signal_number = number
        self.log(
            f"{signal.Signals(number).name}: stopping after this step to write a "
            "checkpoint (send it again to quit at once)"
        )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _restore(self):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def __exit__(self, *exc_info):
        self._restore()
        return False
