"""Documents: the files that `data` names, and where documents end inside them.

`data` is a text file, a folder (searched recursively, files in sorted order of their path;
`glob` keeps those whose name matches; hidden files and folders are left out), or a list of
those. Each file is one document unless `document_boundary` cuts it further:

    file             each file is one document (so one file is one document, a single text)
    line             every line is a document (its line end is not part of it)
    paragraph        documents are separated by blank lines
    separator:TEXT   documents are separated by lines that are TEXT (white space around it
                     ignored), such as the `%` lines of fortune files

Documents never span files. Empty documents (an empty file, a blank line, nothing between two
separators) are dropped, and so are the blank lines at the start and end of a paragraph or
separator document. `DocumentReader.pieces` yields a file's documents as text pieces, each
document followed by DOCUMENT_END, so that a file of any size is read in chunks
(`textgen.corpus.preparation`); `split_documents` applies the same rule to a text in memory
(`textgen.score --per-document`).

A document may carry a label (`textgen.train --labels`, a conditioned model):

    folder   the name of the top folder a file is in under a folder of `data`
             (data/positive/a.txt: "positive"), or for a file directly in it, or named in
             `data` itself, the file's name without its extension (fortunes/cookie: "cookie")
    jsonl    each line of the files is a JSON object {"text": ..., "label": ...}: one
             document, its label (absent or null: none)

A document without a label has NO_LABEL, "<none>", which is also what an unconditioned
generation asks for.
"""

import fnmatch
import json
import os

from textgen.config import parse_document_boundary
from textgen.corpus import reading
from textgen.errors import UsageError

# What DocumentReader yields after the last piece of each document.
DOCUMENT_END = None
# The label of a document that has none, first in every label vocabulary.
NO_LABEL = "<none>"


def data_paths(data):
    """The paths `data` names: one path or a list of them, as strings."""
    if isinstance(data, (str, os.PathLike)):
        return [os.fspath(data)]
    return [os.fspath(path) for path in data]


def describe_data(data):
    """`data` as a command line would spell it: the paths, separated by spaces."""
    return " ".join(data_paths(data))


def folder_files(folder, pattern=""):
    """The files under `folder` whose name (or path relative to `folder`) matches `pattern`
    (every file for ""), sorted by their path; hidden files and folders are left out.
    UsageError for a folder that holds no files, a pattern that matches none of them and a
    subfolder that cannot be listed."""

    def unreadable(error):
        raise UsageError(
            f"cannot list the folder {error.filename} ({error.strerror}); make it readable or "
            "leave it out of `data`"
        )

    found, others = [], []
    for root, folders, names in os.walk(folder, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder)
            if pattern and not (
                fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative, pattern)
            ):
                others.append(relative)
                continue
            found.append((relative.split(os.sep), path))
    if not found and others:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise UsageError(
            f"no file in {folder} matches `glob` {pattern!r} (its {len(others)} files do not: "
            f"{shown}); pass another `glob`, or none for every file"
        )
    if not found:
        raise UsageError(
            f"{folder} is a directory that holds no files (nor the header.json of a prepared "
            "corpus); pass `data` with a folder of text files, a text file, or a directory that "
            "`python -m textgen.prepare` wrote"
        )
    return [path for _, path in sorted(found)]


def source_files(data, pattern="", encoding="utf-8"):
    """The files of `data`, in order, each checked: a path as given, a folder's files
    (`folder_files`). One file gets the checks a corpus file always got
    (`reading.check_corpus_file`: it exists, is not empty, the codec is one); a file of
    several may be empty (it holds no document). UsageError for a missing or unreadable one."""
    paths = data_paths(data)
    if not paths:
        raise UsageError("`data` names no file; pass a text file, a folder of them, or several")
    files = []
    for path in paths:
        files += folder_files(path, pattern) if os.path.isdir(path) else [path]
    for path in files:
        reading.check_corpus_file(path, encoding, allow_empty=len(files) > 1)
        try:
            open(path, "rb").close()
        except OSError as error:
            raise UsageError(
                f"cannot read corpus file {path} ({error.strerror}); make it readable or leave "
                "it out of `data`"
            ) from None
    return files


def file_labels(data, pattern=""):
    """The `--labels folder` label of each file of `source_files(data, pattern)`, in order."""
    labels = []
    for path in data_paths(data):
        if not os.path.isdir(path):
            labels.append(file_label(os.path.basename(path)))
            continue
        for file in folder_files(path, pattern):
            parts = os.path.relpath(file, path).split(os.sep)
            labels.append(parts[0] if len(parts) > 1 else file_label(parts[0]))
    return labels


def file_label(name):
    stem, extension = os.path.splitext(name)
    return stem if stem else name


def split_lines(chunks):
    """The lines of the text that `chunks` hold, without their line ends (the last one is the
    text after the last line end, when there is any)."""
    held = ""
    for text in chunks:
        lines = (held + text).split("\n")
        held = lines.pop()
        yield from lines
    if held:
        yield held


class DocumentReader:
    """Reads files as documents under one `document_boundary` rule, and counts what it saw:
    `documents` (non-empty ones) and `separators` (separator lines). With `labels` ("folder"
    or "jsonl") it keeps each document's label in `labels` (None for none); "jsonl" reads each
    line as a JSON document, whatever the boundary."""

    def __init__(self, encoding="utf-8", keep_newlines=False, boundary="file", labels=""):
        self.encoding, self.keep_newlines = encoding, keep_newlines
        self.kind, self.separator = parse_document_boundary(boundary)
        self.label_source = labels
        if labels == "jsonl":
            self.kind = "jsonl"
        self.documents = self.separators = 0
        self.labels, self.file_label, self.path = [], None, "<text>"

    def pieces(self, path, on_bytes=None, chunk_bytes=None, label=None):
        """The documents of the file `path`: pieces of text, DOCUMENT_END after each document.
        `on_bytes(raw)` sees every block of raw bytes read (`reading.read_chunks`). `label` is
        the file's label (--labels folder)."""
        self.file_label, self.path = label, path
        if os.path.getsize(path) == 0:
            return  # an empty file of several: no document
        chunks = reading.read_chunks(
            path, self.encoding, self.keep_newlines, chunk_bytes, on_bytes=on_bytes
        )
        yield from self.split(chunks)

    def counted(self, label=None):
        """One more document, with `label` (the file's when None)."""
        self.documents += 1
        if self.label_source:
            self.labels.append(self.file_label if label is None else label)

    def split(self, chunks):
        """The documents of the text that `chunks` hold (one file), as `pieces` yields them."""
        if self.kind == "jsonl":
            yield from self.split_json_lines(chunks)
        elif self.kind == "file":
            any_text = False
            for text in chunks:
                any_text = True
                yield text
            if any_text:
                self.counted()
                yield DOCUMENT_END
        elif self.kind == "line":
            for line in split_lines(chunks):
                if line.strip():
                    self.counted()
                    yield line
                    yield DOCUMENT_END
        else:
            yield from self.split_blocks(split_lines(chunks))

    def split_blocks(self, lines):
        """Paragraph and separator documents: the lines between two boundary lines, without
        the blank lines at either end, joined by line ends."""
        started, blank = False, 0
        for line in lines:
            if self.kind == "paragraph":
                boundary = not line.strip()
            else:
                boundary = line.strip() == self.separator
                self.separators += boundary
            if boundary:
                if started:
                    self.counted()
                    yield DOCUMENT_END
                started, blank = False, 0
            elif not line.strip():
                blank += started  # kept only if the document goes on after it
            else:
                yield "\n" * (blank + 1) + line if started else line
                started, blank = True, 0
        if started:
            self.counted()
            yield DOCUMENT_END

    def split_json_lines(self, chunks):
        """--labels jsonl: each non-blank line is {"text": ..., "label": ...}; UsageError
        naming the file and line for one that is not."""
        for number, line in enumerate(split_lines(chunks), 1):
            if not line.strip():
                continue
            where = f"{self.path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UsageError(
                    f"{where}: not JSON ({error.msg} at column {error.colno}); with `labels` "
                    'jsonl every line is an object such as {"text": "...", "label": "..."}'
                ) from None
            text = record.get("text") if isinstance(record, dict) else None
            label = record.get("label") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise UsageError(
                    f'{where}: no "text" string; with `labels` jsonl every line is an object '
                    'such as {"text": "...", "label": "..."}'
                )
            if label is not None and not isinstance(label, (str, int)) or label == "":
                raise UsageError(
                    f'{where}: "label" must be a non-empty string (or absent, or null for '
                    f"none), got {json.dumps(label)}"
                )
            if not text:
                continue
            self.counted(NO_LABEL if label is None else str(label))
            yield text
            yield DOCUMENT_END


def labelled_documents(data, boundary="file", labels="folder", glob="", encoding="utf-8"):
    """[(text, label)] of every document of `data`, in corpus order, as `textgen.train
    --labels` reads them (a document without a label has NO_LABEL): the order that
    `textgen.corpus.preparation.held_out_documents` chooses the held-out ones in."""
    reader = DocumentReader(encoding, False, boundary, labels)
    files = source_files(data, glob, encoding)
    names = file_labels(data, glob) if labels == "folder" else [None] * len(files)
    documents, pieces = [], []
    for path, name in zip(files, names):
        for piece in reader.pieces(path, label=name):
            if piece is DOCUMENT_END:
                documents.append("".join(pieces))
                pieces = []
            else:
                pieces.append(piece)
    return [(text, label or NO_LABEL) for text, label in zip(documents, reader.labels)]


def split_documents(text, boundary="file"):
    """The documents of `text` (one file's text) under `boundary`, as strings."""
    documents, pieces = [], []
    for piece in DocumentReader(boundary=boundary).split([text]):
        if piece is DOCUMENT_END:
            documents.append("".join(pieces))
            pieces = []
        else:
            pieces.append(piece)
    return documents
