"""README.md stays short, and no link of the hand-written docs points nowhere.

The README is what a newcomer reads first: at most 300 lines (issue 25), the rest in docs/.
Moving a section there must not leave a dead link behind, so every relative link of README.md,
docs/*.md and bench/README.md must name a file that exists, and a `#anchor` into a markdown
file one of its headings (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens,
-1, -2, ... for repeated headings).
"""

import glob
import os
import re

import pytest

from helpers import ROOT

README_MAX_LINES = 300
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")  # [text](target), ![alt](target); text may wrap
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def line_count(text):
    return len(text.splitlines())


def documents():
    docs = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return [os.path.join(ROOT, "README.md"), *docs, os.path.join(ROOT, "bench", "README.md")]


def links(markdown):
    """The link targets of `markdown`, outside code blocks and code spans."""
    return LINK.findall(CODE.sub("", FENCE.sub("", markdown)))


def anchor(heading):
    """GitHub's anchor for a heading: `python -m textgen.prepare` -> python--m-textgenprepare."""
    text = CODE.sub(lambda m: m.group(0)[1:-1], heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown):
    seen, found = {}, set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        name = anchor(heading)
        count = seen.get(name, 0)
        seen[name] = count + 1
        found.add(name if count == 0 else f"{name}-{count}")
    return found


def dead_links(path, markdown):
    """'TARGET (why)' for every relative link of the file at `path` that leads nowhere."""
    dead = []
    for target in links(markdown):
        if EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        destination = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
        if not file_part:
            destination = path
        if not os.path.exists(destination):
            dead.append(f"{target} (no such file)")
        elif fragment and destination.endswith(".md"):
            text = markdown if destination == path else read(destination)
            if fragment not in anchors(text):
                dead.append(f"{target} (no such heading)")
    return dead


def too_long(path):
    """The complaint about the file at `path` when it has more than README_MAX_LINES lines."""
    count = line_count(read(path))
    if count > README_MAX_LINES:
        return f"{os.path.basename(path)} has {count} lines, more than {README_MAX_LINES}"
    return None


def test_readme_is_at_most_300_lines():
    assert too_long(os.path.join(ROOT, "README.md")) is None, "move details to docs/"


def test_the_length_check_fails_at_301_lines(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("line\n" * README_MAX_LINES, encoding="utf-8")
    assert too_long(str(readme)) is None
    readme.write_text("line\n" * README_MAX_LINES + "one more", encoding="utf-8")
    assert too_long(str(readme)) == "README.md has 301 lines, more than 300"
    readme.write_text("line\n" * (README_MAX_LINES + 1), encoding="utf-8")
    assert too_long(str(readme)) == "README.md has 301 lines, more than 300"


@pytest.mark.parametrize("path", documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_lead_somewhere(path):
    assert dead_links(path, read(path)) == []


def test_the_link_check_catches_dead_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## `python -m textgen.prepare`: corpora\n\n## Set-up: two commands\n"
    )
    readme = tmp_path / "README.md"
    text = "\n".join(
        [
            "# Top",
            "[ok](docs/guide.md), [ok](docs/guide.md#python--m-textgenprepare-corpora),",
            "[ok](docs/guide.md#set-up-two-commands), [ok](#top), [web](https://example.org/x),",
            "[gone](docs/moved.md), [gone](docs/moved.md#guide), [wrapped",
            "text](docs/gone.md), [bad anchor](docs/guide.md#setup), [here](#nowhere).",
            "`[not a link](docs/none.md)`",
            "```",
            "[not a link](docs/none.md)",
            "```",
        ]
    )
    readme.write_text(text)
    assert dead_links(str(readme), text) == [
        "docs/moved.md (no such file)",
        "docs/moved.md#guide (no such file)",
        "docs/gone.md (no such file)",
        "docs/guide.md#setup (no such heading)",
        "#nowhere (no such heading)",
    ]
