"""The argument parser of every CLI: full help on --help, three short lines on a bad flag.

argparse prints the whole usage (every flag, 24 lines for textgen.train) above a wrongly typed
or unknown flag, which buries the one line that matters. Here a bad flag prints

    usage: python -m textgen.train [options]
    python -m textgen.train: error: argument --hidden-size: invalid int value: 'abc'
    run `python -m textgen.train --help` for every flag

and exits with status 2, as argparse does; `--help` is unchanged.
"""

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    def format_usage(self):
        """`usage: PROG POSITIONALS [options]`: the positional arguments argparse would show,
        the flags left to --help."""
        formatter = self._get_formatter()
        formatter.add_usage(None, [a for a in self._actions if not a.option_strings], [])
        return formatter.format_help().rstrip() + " [options]\n"

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\nrun `{self.prog} --help` for every flag\n")
