"""Errors a user can fix, and the one place that turns them into a one-line message.

The library's messages name a parameter as `name`, the way a Python caller passes it
(`batch_size` 8); a CLI prints the same message with its own spelling of that parameter
(--batch-size 8). Every parser that `textgen.cli.build_parser` builds records its spellings in
CLI_SPELLINGS, and `cli_errors` rewrites the names it knows (`as_cli_message`).
"""

import functools
import re
import sys

# Parameter name -> how the CLIs spell it: --batch-size, --no-export, RUN_DIR.
CLI_SPELLINGS = {}

_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def as_cli_message(message):
    """`message` with each `parameter` a CLI knows written as its flag."""
    return _PARAMETER.sub(lambda m: CLI_SPELLINGS.get(m.group(1), m.group(0)), str(message))


class UsageError(Exception):
    """Bad input: the message names the problem and the fix. CLIs print it and exit 2."""

    exit_status = 2


class TrainingDiverged(Exception):
    """The loss became NaN or exploded. The last good checkpoint is left as it was."""

    exit_status = 3


class DiskFull(Exception):
    """A checkpoint or an export did not fit on the disk. What was there before is left as it
    was; the message says how much space the write needs."""

    exit_status = 3


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a step, and a checkpoint of that step was
    written. Exit status 128 + the signal number, as a shell reports a process the signal ended."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.exit_status = 128 + signal_number


def cli_errors(main):
    """Wraps a CLI `main` so that UsageError and friends print one line, no traceback."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except (UsageError, TrainingDiverged, DiskFull) as error:
            print(f"error: {as_cli_message(error)}", file=sys.stderr)
            return error.exit_status
        except TrainingInterrupted as error:
            print(as_cli_message(error), file=sys.stderr)
            return error.exit_status
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
