"""The argument parser of every CLI, built from its config dataclass.

Each field of a CLI's config dataclass is one flag, and its `metadata` is the flag's one
documentation (`--help`, and docs/flags.md generated from it by docs/make_flags.py):

    hidden_size: int = dataclasses.field(default=256, metadata={"help": "units per layer"})

gives `--hidden-size HIDDEN_SIZE  units per layer (default: 256)`. The flag's type is the
default's (str for a default of None or none at all); a bool that defaults to False is a
`--NAME` switch, one that defaults to True a `--no-NAME` switch whose help says what switching
it off does. Other metadata keys: `metavar`, `choices`, `nargs` (a positional's, or a
flag's that takes several values, such as `--data PATH [PATH ...]`), `required`
(argparse refuses to run without it) and `default_help`, what `(default: ...)` says where the
value itself would not tell (a long path, an empty string that means "not written").

Parsers leave unset flags out of the namespace (`argparse.SUPPRESS`), so `vars(args)` holds
just what was typed: the dataclass fills in the defaults, and a resumed training run can tell
a flag given on purpose from a default.

argparse prints the whole usage (every flag, 24 lines for textgen.train) above a wrongly typed
or unknown flag, which buries the one line that matters. Here a bad flag prints

    usage: python -m textgen.train [options]
    python -m textgen.train: error: argument --hidden-size: invalid int value: 'abc'
    run `python -m textgen.train --help` for every flag

and exits with status 2, as argparse does; `--help` is unchanged.
"""

import argparse
import dataclasses
import sys

from textgen.errors import CLI_SPELLINGS


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


def build_parser(config_class, prog, description, positionals=()):
    """An ArgumentParser with one argument per field of the dataclass `config_class`: the
    fields named in `positionals` are positional arguments, in that order, the rest flags."""
    parser = ArgumentParser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    for name in positionals:
        add_positional(parser, fields[name])
    for name, field in fields.items():
        if name not in positionals:
            add_flag(parser, field)
    return parser


def flag_name(name):
    return "--" + name.replace("_", "-")


def add_positional(parser, field):
    meta = field.metadata
    metavar = meta.get("metavar", field.name.upper())
    CLI_SPELLINGS[field.name] = metavar  # how cli_errors prints the library's `name`
    parser.add_argument(
        field.name,
        metavar=metavar,
        nargs=meta.get("nargs"),
        help=meta["help"],
    )


def add_flag(parser, field):
    meta, default = field.metadata, field.default
    if isinstance(default, bool):
        name = flag_name("no_" + field.name if default else field.name)
        CLI_SPELLINGS[field.name] = name
        action = "store_false" if default else "store_true"
        parser.add_argument(name, dest=field.name, action=action, help=meta["help"])
        return
    required = meta.get("required", default is dataclasses.MISSING)
    value_type = str if default in (None, dataclasses.MISSING) else type(default)
    options = {"type": value_type, "required": required, "help": meta["help"]}
    if "nargs" in meta:
        options["nargs"] = meta["nargs"]
    if "choices" in meta:
        options["choices"] = meta["choices"]  # argparse then shows {a,b} as the metavar
    else:
        options["metavar"] = meta.get("metavar", field.name.upper())
    shown = meta.get("default_help", default)
    if required:
        options["help"] += " (required)"
    elif shown not in ("", None):
        options["help"] += f" (default: {shown})"
    CLI_SPELLINGS[field.name] = flag_name(field.name)
    parser.add_argument(flag_name(field.name), **options)
