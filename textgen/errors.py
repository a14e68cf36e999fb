"""Errors a user can fix, and the one place that turns them into a one-line message."""

import functools
import sys


class UsageError(Exception):
    """Bad input: the message names the problem and the fix. CLIs print it and exit 2."""

    exit_status = 2


class TrainingDiverged(Exception):
    """The loss became NaN or exploded. The last good checkpoint is left as it was."""

    exit_status = 3


def cli_errors(main):
    """Wraps a CLI `main` so that UsageError and TrainingDiverged print one line, no traceback."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except (UsageError, TrainingDiverged) as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_status
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
