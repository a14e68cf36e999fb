"""Writes docs/flags.md: one table of flags per CLI, made from the CLIs' own parsers.

    python docs/make_flags.py

Each row is what `--help` prints for one argument: the flag and its metavar, the default (the
`(default: ...)` at the end of the help text), and the rest of the help text. The help texts
live in the CLIs' config dataclasses (`textgen/cli.py` says how), so a changed flag means
rerunning this script; tests/test_flags_docs.py fails until then.
"""

import argparse
import importlib
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "docs", "flags.md")
CLIS = (
    "textgen.prepare",
    "textgen.train",
    "textgen.sample",
    "textgen.score",
    "textgen.export",
    "textgen.serve",
    "captioning.train",
    "captioning.caption",
    "captioning.evaluate",
    "captioning.export",
    "captioning.coco_data",
    "captioning.shapes",
)
HEADER = (
    "# Flags of every CLI\n\n"
    "Generated from the parsers (the `--help` texts) by `docs/make_flags.py`; do not edit "
    "it by hand.\nRegenerate it with `python docs/make_flags.py` after changing a flag; "
    "`tests/test_flags_docs.py` fails until then.\n"
)
DEFAULT = re.compile(r"\s*\((default: (?P<default>.*)|(?P<required>required))\)$", re.DOTALL)


def parsers():
    """{module name: its build_parser()} for every CLI, in CLIS order."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return {name: importlib.import_module(name).build_parser() for name in CLIS}


def markdown(text):
    """`text` safe inside a table cell: | and * escaped, <unk>-style tokens kept visible."""
    text = " ".join(text.split()).replace("|", "\\|").replace("*", "\\*")
    return re.sub(r"<[A-Za-z]+>", lambda match: f"`{match.group()}`", text)


def row(formatter, action):
    """(flag, default, meaning) of one argument, as --help shows it."""
    invocation = formatter._format_action_invocation(action)
    if not action.option_strings:
        invocation = formatter._format_args(action, action.metavar)
    elif action.choices is None and action.metavar in (None, action.dest.upper()):
        # `--seed SEED` says no more than `--seed`.
        invocation = ", ".join(action.option_strings)
    meaning = formatter._expand_help(action)
    match = DEFAULT.search(meaning)
    if match:
        meaning = meaning[: match.start()]
        default = "required" if match["required"] else match["default"]
    elif not action.option_strings:
        default = "required"
    elif action.nargs == 0:  # a switch: off unless given
        default = "off"
    else:
        default = ""
    return f"`{invocation}`", markdown(default), markdown(meaning)


def section(module, parser):
    formatter = parser._get_formatter()
    # The short usage textgen.cli prints, unwrapped whatever the terminal's width.
    positionals = [
        formatter._format_args(a, a.metavar) for a in parser._actions if not a.option_strings
    ]
    usage = " ".join([parser.prog, *positionals, "[options]"])
    lines = [
        f"## python -m {module}",
        "",
        markdown(parser.description),
        "",
        f"`{usage}`",
        "",
        "| flag | default | meaning |",
        "| --- | --- | --- |",
    ]
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            lines.append("| " + " | ".join(row(formatter, action)) + " |")
    return "\n".join(lines) + "\n"


def render(cli_parsers=None):
    """The text of docs/flags.md for {module: parser} (default: every CLI's)."""
    cli_parsers = parsers() if cli_parsers is None else cli_parsers
    contents = "\n".join(f"- [python -m {m}](#python--m-{m.replace('.', '')})" for m in cli_parsers)
    sections = [section(module, parser) for module, parser in cli_parsers.items()]
    return "\n".join([HEADER, contents + "\n", *sections])


def main():
    text = render()
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUTPUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
