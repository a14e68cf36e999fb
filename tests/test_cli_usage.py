"""A wrongly typed or unknown flag gets three short lines (usage, the error, a pointer to --help)
and exit status 2 from every CLI; --help still lists every flag."""

import importlib

import pytest

# (module, argv with one bad flag, the error argparse reports for it)
BAD_FLAGS = [
    ("textgen.train", ["--hidden-size", "abc"], "argument --hidden-size: invalid int value: 'abc'"),
    ("textgen.sample", ["RUN", "--length", "abc"], "argument --length: invalid int value: 'abc'"),
    ("textgen.score", ["RUN", "--streams", "x"], "argument --streams: invalid int value: 'x'"),
    ("textgen.export", ["RUN", "OUT", "--xla"], "unrecognized arguments: --xla"),
    (
        "captioning.train",
        ["--hidden-size", "abc"],
        "argument --hidden-size: invalid int value: 'abc'",
    ),
    (
        "captioning.caption",
        ["a.png", "--beam-size", "abc"],
        "argument --beam-size: invalid int value: 'abc'",
    ),
    (
        "captioning.evaluate",
        ["--annotations", "a.json", "--images", "dir", "--max-images", "1.5"],
        "argument --max-images: invalid int value: '1.5'",
    ),
    (
        "captioning.export",
        ["RUN", "OUT", "--max-length", "abc"],
        "argument --max-length: invalid int value: 'abc'",
    ),
    (
        "captioning.coco_data",
        ["--annotations", "a.json", "--images-dir", "dir", "--min-count", "x"],
        "argument --min-count: invalid int value: 'x'",
    ),
    (
        "captioning.shapes",
        ["--out", "dir", "--seed", "abc"],
        "argument --seed: invalid int value: 'abc'",
    ),
]
POSITIONALS = {
    "textgen.sample": "[RUN_DIR] ",
    "textgen.score": "[RUN_DIR] [FILE] ",
    "textgen.export": "RUN_DIR OUT_DIR ",
    "captioning.caption": "[IMAGE ...] ",
    "captioning.export": "RUN_DIR OUT_DIR ",
}


def exit_status(main, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


@pytest.mark.parametrize("module, argv, error", BAD_FLAGS, ids=[m for m, _, _ in BAD_FLAGS])
def test_a_bad_flag_is_three_short_lines(module, argv, error, capsys):
    prog = f"python -m {module}"
    assert exit_status(importlib.import_module(module).main, argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"usage: {prog} {POSITIONALS.get(module, '')}[options]",
        f"{prog}: error: {error}",
        f"run `{prog} --help` for every flag",
    ]


@pytest.mark.parametrize("module", [m for m, _, _ in BAD_FLAGS])
def test_help_still_lists_every_flag(module, capsys):
    cli = importlib.import_module(module)
    assert exit_status(cli.main, ["--help"]) == 0
    out = capsys.readouterr().out
    flags = [flag for action in cli.build_parser()._actions for flag in action.option_strings]
    assert len(flags) > 3
    assert [flag for flag in flags if flag not in out] == []
    assert "[options]" not in out  # the full usage, not the short one
