"""CorpusPreparation: text files tokenised, in chunks, into the files of a prepared corpus
(`textgen.corpus.prepared_corpus` reads them; its docstring has the layout).

The text is read twice at most. A first pass counts the vocabulary: characters by code point
(NumPy's bincount over each chunk's code points), words by provisional id, given in order of
first appearance and written to a temporary file, so that the text is tokenised once. A second
pass writes the final ids: characters through a code point -> id table, words through a
provisional id -> id table over that file. Memory stays bounded by a chunk and the vocabulary.

A corpus of several documents (`textgen.corpus.documents`: files, or the documents that
`document_boundary` cuts them into) ends every document with the token END_OF_DOCUMENT, and
validation holds out whole documents, a seeded choice of them (`held_out_documents`). One
document, such as a single file, is prepared as it always was: no end token, validation the
text's tail.

With `labels` (`--labels folder` or `jsonl`, `textgen.corpus.documents`), every document's
label is kept too: LABELS lists the label names (NO_LABEL first), and TRAIN_LABELS and
VAL_LABELS hold each document's label id (little-endian uint32), parallel to the offsets.
"""

import hashlib
import json
import multiprocessing
import os
import shutil
import time

import numpy as np
from tqdm import tqdm

from textgen.corpus import reading
from textgen.corpus.documents import (
    DOCUMENT_END,
    NO_LABEL,
    DocumentReader,
    data_paths,
    describe_data,
    file_labels,
)
from textgen.corpus.stream_batches import validation_length
from textgen.corpus.tokenizers import NEWLINE, looks_chinese, make_tokenizer
from textgen.corpus.vocabulary import END_OF_DOCUMENT, Vocabulary
from textgen.errors import UsageError

FORMAT = "textgen-prepared-corpus"
VERSION = 1
HEADER, VOCABULARY, TRAIN, VALIDATION = "header.json", "vocab.json", "train.bin", "val.bin"
# Where each document starts in train.bin's and val.bin's ids (little-endian uint64), written
# when the corpus has several documents.
TRAIN_DOCUMENTS, VAL_DOCUMENTS = "train_documents.bin", "val_documents.bin"
OFFSET_DTYPE = np.dtype("<u8")
# With --labels: the label names (a JSON list), and each document's label id in train.bin's
# and val.bin's document order.
LABELS, TRAIN_LABELS, VAL_LABELS = "labels.json", "train_labels.bin", "val_labels.bin"
LABEL_DTYPE = np.dtype("<u4")
PROVISIONAL = "provisional_ids.tmp"
UNKNOWN = "<unk>"
# (dtype, how many distinct ids it holds), narrowest first.
DTYPES = (("uint8", 2**8), ("uint16", 2**16), ("uint32", 2**32))
CODE_POINTS = 0x110000
# The end of a document among a text's code points (one past the last code point).
END_CODE = CODE_POINTS
# The document flags a preparation takes, and their defaults: one file is one document.
DOCUMENT_OPTIONS = {
    "document_boundary": "file",
    "glob": "",
    "seed": 0,
    "labels": "",
    "document_order": "corpus",
}
# Text without a place to cut it (a newline, or a space outside jieba) held back at most.
MAX_HELD_CHARS = 16 << 20
# Text per task handed to a jieba worker process.
JIEBA_CHUNK_CHARS = 1 << 18


def ids_dtype(vocabulary_size):
    """The narrowest unsigned dtype that holds ids 0 .. vocabulary_size - 1."""
    for name, limit in DTYPES:
        if vocabulary_size <= limit:
            return name
    raise UsageError(
        f"a vocabulary of {vocabulary_size:,} tokens overflows uint32, the widest id type; "
        "lower `max_vocab` or raise `min_count`"
    )


def resolve_segmenter(source, options):
    """`options` with --segmenter auto replaced by what it picks from the text's start (jieba
    for Chinese, regex otherwise), so that the prepared corpus and the run name the same one.
    `source` is a file or a list of them: the first that is not empty decides."""
    if options["level"] != "word" or options["segmenter"] != "auto":
        return dict(options)
    files = data_paths(source)
    first = next((path for path in files if os.path.getsize(path)), files[0])
    head = next(
        reading.read_chunks(first, options["encoding"], options["keep_newlines"], 1 << 16), ""
    )
    return {**options, "segmenter": "jieba" if looks_chinese(head) else "regex"}


def progress_bar(total, description, enabled):
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=description,
        leave=False,
        disable=None if enabled is None else not enabled,
        dynamic_ncols=True,
    )


def code_points(text):
    """The code points of a str as an array, at C speed: uint8 for ASCII text (the common case,
    several times faster to count and look up), uint32 otherwise."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class SplitWriter:
    """Writes a stream of id arrays to train.bin until `train_tokens` ids are written, the rest
    to val.bin."""

    def __init__(self, directory, train_tokens, dtype):
        self.files = [open(os.path.join(directory, name), "wb") for name in (TRAIN, VALIDATION)]
        self.left, self.dtype = train_tokens, np.dtype(dtype).newbyteorder("<")

    def write(self, ids):
        ids = ids.astype(self.dtype, copy=False)
        if self.left > 0:
            head = ids[: self.left]
            self.files[0].write(head.tobytes())
            self.left -= len(head)
            ids = ids[len(head) :]
        if len(ids):
            self.files[1].write(ids.tobytes())

    def close(self):
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())
            f.close()


def files_sha256(digests):
    """One SHA-256 for several files, in order, from theirs (hex strings)."""
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()


def held_out_documents(num_documents, val_fraction, seed):
    """Which of `num_documents` documents validation holds out (a bool array): a fixed choice
    of round(num_documents * val_fraction) of them, at least one and leaving one, drawn with
    NumPy's generator seeded by `seed`."""
    count = min(num_documents - 1, max(1, int(round(num_documents * val_fraction))))
    held_out = np.zeros(num_documents, dtype=bool)
    held_out[np.random.default_rng(seed).choice(num_documents, count, replace=False)] = True
    return held_out


def shuffle_training_documents(directory, dtype, seed):
    """Rewrites train.bin and its offsets with the training documents in a fixed random order
    (seeded by `seed`, drawn apart from the held-out choice), and returns that order: old
    document index of each new position. The ids are copied through a memory map in pieces of
    about CHUNK_BYTES, so a corpus of any size is shuffled in bounded memory."""
    path = os.path.join(directory, TRAIN)
    offsets_path = os.path.join(directory, TRAIN_DOCUMENTS)
    ids = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")
    starts = np.fromfile(offsets_path, dtype=OFFSET_DTYPE).astype(np.int64)
    ends = np.append(starts[1:], len(ids))
    order = np.random.default_rng([seed, 1]).permutation(len(starts))
    lengths = (ends - starts)[order]
    with open(path + ".shuffled", "wb") as f:
        pieces, size = [], 0
        for document in order:
            pieces.append(ids[starts[document] : ends[document]])
            size += len(pieces[-1])
            if size * ids.itemsize >= reading.CHUNK_BYTES:
                f.write(np.concatenate(pieces).tobytes())
                pieces, size = [], 0
        if pieces:
            f.write(np.concatenate(pieces).tobytes())
        f.flush()
        os.fsync(f.fileno())
    del ids
    os.replace(path + ".shuffled", path)
    with open(offsets_path, "wb") as f:
        f.write(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(OFFSET_DTYPE).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return order


class DocumentWriter:
    """Writes whole documents to train.bin or to val.bin: `write` takes the raw ids of the text
    (code points, or provisional word ids) in order, `end` after each document, maps them
    through `lookup`, and sends document i to val.bin when `held_out[i]`. It keeps where each
    document starts in its split's ids (`offsets`), and `on_val(raw)` sees the raw ids that go
    to validation. Vectorised: a chunk of a million one-line documents is a few NumPy calls."""

    def __init__(self, directory, dtype, held_out, end, lookup, on_val=None):
        self.directory = directory
        self.files = [open(os.path.join(directory, name), "wb") for name in (TRAIN, VALIDATION)]
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.held_out, self.end, self.lookup, self.on_val = held_out, end, lookup, on_val
        self.document, self.inside = 0, False  # the current document; whether it has begun
        self.counts = [0, 0]
        self.offsets = [[], []]

    def write(self, raw):
        if not len(raw):
            return
        is_end = raw == self.end
        document = self.document + np.cumsum(is_end) - is_end  # each id's document
        val = self.held_out[document]
        starts = np.empty(len(raw), dtype=bool)  # the first id of a document
        starts[0] = not self.inside
        starts[1:] = is_end[:-1]
        for split, mask in ((0, ~val), (1, val)):
            if not mask.any():
                continue
            positions = self.counts[split] + np.cumsum(mask) - 1
            self.offsets[split].append(positions[starts & mask])
            ids = raw[mask]
            self.files[split].write(self.lookup[ids].astype(self.dtype, copy=False).tobytes())
            if split == 1 and self.on_val is not None:
                self.on_val(ids)
            self.counts[split] += len(ids)
        self.document = int(document[-1] + is_end[-1])
        self.inside = not is_end[-1]

    def close(self):
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for name, offsets in zip((TRAIN_DOCUMENTS, VAL_DOCUMENTS), self.offsets):
            with open(os.path.join(self.directory, name), "wb") as f:
                f.write(np.concatenate([np.zeros(0, np.int64), *offsets]).astype(OFFSET_DTYPE))
                f.flush()
                os.fsync(f.fileno())

    @property
    def document_counts(self):
        return [sum(len(offsets) for offsets in split) for split in self.offsets]


class ProvisionalIds(dict):
    """token -> provisional id, a new token getting the next id; `map(ids.__getitem__, tokens)`
    runs at C speed for the tokens already seen. `new` lists the tokens in id order."""

    def __init__(self):
        super().__init__()
        self.new = []

    def __missing__(self, token):
        value = self[token] = len(self.new)
        self.new.append(token)
        return value


class WordSplitter:
    """Provisional token ids of text whose tokens never span white space (the regex and
    whitespace tokenisers). `str.split()` cuts the text into raw words at C speed, and each
    distinct raw word ("speak," or "citizen:") is tokenised once and remembered, so the work per
    occurrence is a dict lookup and a NumPy gather: 3x faster than tokenising the text.

    `str.split()` splits at exactly the characters that re's `\\s` matches (str.isspace), those
    the tokenisers split at; newlines, which are tokens, are swapped for a sentinel character
    the piece does not hold before splitting."""

    SENTINELS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F)]

    def __init__(self, tokenizer, provisional):
        self.tokenizer, self.provisional = tokenizer, provisional
        self.raw = ProvisionalIds()  # raw word -> raw id
        self.starts = np.zeros(0, dtype=np.int64)  # raw id -> its first token id in `flat`
        self.lengths = np.zeros(0, dtype=np.int64)  # raw id -> its number of tokens
        self.flat = np.zeros(0, dtype=np.uint32)  # the raw words' provisional token ids
        self.raw[NEWLINE]  # raw id 0, what the sentinel stands for (never a word of split())
        self.learn(self.raw.new)

    def ids(self, text):
        sentinel = next((c for c in self.SENTINELS if c not in text), None)
        if sentinel is None:  # every control character in one piece: tokenise it plainly
            tokens = self.tokenizer.tokenize(text)
            return np.fromiter(
                map(self.provisional.__getitem__, tokens), dtype=np.uint32, count=len(tokens)
            )
        shadowed = self.raw.pop(sentinel, None)  # a raw word of an earlier piece
        dict.__setitem__(self.raw, sentinel, 0)
        try:
            words = text.replace(NEWLINE, f" {sentinel} ").split()
            known = len(self.raw.new)
            raw_ids = np.fromiter(map(self.raw.__getitem__, words), np.int64, count=len(words))
        finally:
            del self.raw[sentinel]
            if shadowed is not None:
                dict.__setitem__(self.raw, sentinel, shadowed)
        self.learn(self.raw.new[known:])
        lengths = self.lengths[raw_ids]
        ends = np.cumsum(lengths)
        offsets = np.repeat(self.starts[raw_ids] - (ends - lengths), lengths)
        return self.flat[offsets + np.arange(len(offsets))]

    def learn(self, words):
        """Tokenises the raw words seen for the first time (in raw id order)."""
        if not words:
            return
        tokens = [self.tokenizer.tokenize(word) for word in words]
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        starts = len(self.flat) + np.cumsum(lengths) - lengths
        flat = [self.provisional[t] for word in tokens for t in word]
        self.starts = np.concatenate([self.starts, starts])
        self.lengths = np.concatenate([self.lengths, lengths])
        self.flat = np.concatenate([self.flat, np.array(flat, dtype=np.uint32)])


def _jieba_tokens(text):
    if text is DOCUMENT_END:
        return [END_OF_DOCUMENT]
    from textgen.corpus.tokenizers import JiebaTokenizer

    global _JIEBA
    if "_JIEBA" not in globals():
        _JIEBA = JiebaTokenizer()
    return _JIEBA.tokenize(text)


class CorpusPreparation:
    """One preparation of `source` (a text file, or a list of them: `documents.source_files`)
    with `options` (the tokenisation flags, segmenter resolved) and `documents` (the document
    flags of DOCUMENT_OPTIONS, and `data`: the paths as given) into a directory:
    `write(directory)` does both passes there."""

    def __init__(self, source, options, progress=None, workers=0, documents=None):
        self.files = data_paths(source)
        self.source = self.files[0] if len(self.files) == 1 else describe_data(self.files)
        self.options = options
        self.document_options = {**DOCUMENT_OPTIONS, **(documents or {})}
        self.data = data_paths(self.document_options.pop("data", self.files))
        self.reader = DocumentReader(
            options["encoding"],
            options["keep_newlines"],
            self.document_options["document_boundary"],
            self.document_options["labels"],
        )
        if self.document_options["labels"] == "folder":
            self.file_labels = file_labels(self.data, self.document_options["glob"])
        else:
            self.file_labels = [None] * len(self.files)
        self.progress, self.workers = progress, workers or os.cpu_count() or 1
        self.size = sum(os.path.getsize(path) for path in self.files)
        self.tokenizer = make_tokenizer(options["level"], options["segmenter"])
        self.digests = [hashlib.sha256() for _ in self.files]

    def chunks(self, description, hashing=False):
        """The documents' text in pieces, DOCUMENT_END after each document, with a progress bar
        over the files' bytes; with `hashing`, each file's bytes go into its `digests` too."""
        self.reader.documents = self.reader.separators = 0
        self.reader.labels = []
        with progress_bar(self.size, description, self.progress) as bar:
            for path, digest, label in zip(self.files, self.digests, self.file_labels):

                def seen(raw, digest=digest):
                    bar.update(len(raw))
                    if hashing:
                        digest.update(raw)

                yield from self.reader.pieces(path, on_bytes=seen, label=label)

    def check_documents(self):
        """After the first pass: UsageError for a separator that never occurs. Sets
        `num_documents` and `uses_documents` (more than one: the end token, whole documents
        held out)."""
        reader = self.reader
        if reader.kind == "separator" and reader.separators == 0:
            raise UsageError(
                f"`document_boundary` separator:{reader.separator} never occurs in "
                f"{describe_data(self.data)}: no line of it is {reader.separator!r}; pass the "
                "separator its files use, or another `document_boundary`"
            )
        self.num_documents = reader.documents
        self.uses_documents = reader.documents > 1
        self.label_names, self.document_labels = None, None
        if reader.label_source:
            if not self.uses_documents:
                raise UsageError(
                    f"`labels` {reader.label_source} needs several documents, and "
                    f"{describe_data(self.data)} holds {reader.documents}; pass a folder of "
                    "files or a `document_boundary` that cuts them into documents"
                )
            names = [NO_LABEL] + sorted({label for label in reader.labels} - {NO_LABEL})
            index = {name: i for i, name in enumerate(names)}
            self.label_names = names
            self.document_labels = np.array(
                [index[label] for label in reader.labels], dtype=LABEL_DTYPE
            )

    def write(self, directory):
        started = time.monotonic()
        char_level = self.options["level"] == "char"
        if char_level:
            counts = self.count_characters()
        else:
            counts = self.count_words(directory)
        self.check_documents()
        end = None
        if not char_level and END_OF_DOCUMENT in self.provisional:
            end = self.provisional[END_OF_DOCUMENT]
            if not self.uses_documents:
                counts[end] = 0  # one document: its end is no token
        self.num_tokens = int(counts.sum())
        if char_level and self.uses_documents:
            self.num_tokens += self.num_documents
        if self.num_characters == 0:
            where = (
                f"corpus file {self.source}" if len(self.files) == 1 else describe_data(self.data)
            )
            raise UsageError(f"{where} holds no text; pass `data` with a non-empty text file")
        vocabulary, token_ids = self.vocabulary(counts)
        self.vocabulary_size = len(vocabulary)
        dtype = ids_dtype(len(vocabulary))
        itemsize = np.dtype(dtype).itemsize
        free = shutil.disk_usage(directory).free
        copies = 2 if self.document_options["document_order"] == "shuffled" else 1
        if free < copies * self.num_tokens * itemsize:  # shuffling writes train.bin twice
            raise OSError(28, os.strerror(28))  # ENOSPC before writing, not midway
        if self.uses_documents:
            self.write_documents(directory, vocabulary, token_ids, counts, dtype, end)
        else:
            self.write_tail_split(directory, vocabulary, token_ids, counts, dtype, end)
        vocabulary.save(os.path.join(directory, VOCABULARY))
        header = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": dtype,
            "vocabulary_size": len(vocabulary),
            "tokens": self.num_tokens,
            "train_tokens": self.num_tokens - self.num_val,
            "val_tokens": self.num_val,
            "characters": self.num_characters,
            "characters_per_token": self.num_characters / self.num_tokens,
            "val_characters_per_token": self.val_characters_per_token,
            "coverage": self.kept / self.num_tokens,
            "seconds": time.monotonic() - started,
            **self.source_records(),
            "documents": self.documents_record(),
            "tokenisation": self.options,
        }
        with open(os.path.join(directory, HEADER), "w", encoding="utf-8") as f:
            f.write(json.dumps(header, indent=1, ensure_ascii=False))

    def source_records(self):
        """The header's `sources` (every file: path, size, mtime, SHA-256) and `source`: the one
        file, as it always was, or for several their summary (the paths as given, their total
        size, the latest mtime, a SHA-256 of the files' SHA-256s)."""
        sources = []
        for path, digest in zip(self.files, self.digests):
            stat = os.stat(path)
            sources.append(
                {
                    "path": os.path.abspath(path),
                    "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "sha256": digest.hexdigest(),
                }
            )
        if len(sources) == 1:
            return {"source": dict(sources[0]), "sources": sources}
        summary = {
            "path": describe_data(os.path.abspath(path) for path in self.data),
            "size": sum(source["size"] for source in sources),
            "mtime_ns": max(source["mtime_ns"] for source in sources),
            "sha256": files_sha256(source["sha256"] for source in sources),
        }
        return {"source": summary, "sources": sources}

    def documents_record(self):
        """The header's `documents`: how many, how they were cut and split, the end token."""
        options = self.document_options
        record = {
            "count": self.num_documents,
            "boundary": options["document_boundary"],
            "glob": options["glob"],
            "data": [os.path.abspath(path) for path in self.data],
            "end_token": END_OF_DOCUMENT if self.uses_documents else None,
            "split": "documents" if self.uses_documents else "tail",
        }
        if self.uses_documents:
            train, val = self.document_counts
            record.update(seed=options["seed"], train=train, val=val)
        if self.uses_documents:
            record.update(order=options["document_order"])
        if self.label_names is not None:
            record.update(labels=options["labels"], label_count=len(self.label_names))
        return record

    # ---- pass 2: writing the ids ----
    def write_documents(self, directory, vocabulary, token_ids, counts, dtype, end):
        """Several documents: each ends with the end token, and validation holds out whole
        documents (`held_out_documents`)."""
        held_out = held_out_documents(
            self.num_documents, self.options["val_fraction"], self.document_options["seed"]
        )
        end_id = vocabulary.id(END_OF_DOCUMENT)
        unknown = vocabulary.id(vocabulary.unknown_token) if vocabulary.unknown_token else 0
        lookup = np.where(token_ids >= 0, token_ids, unknown)
        char_level = self.options["level"] == "char"
        if char_level:
            end = END_CODE
            lookup = np.append(lookup, end_id)
        else:
            lookup[end] = end_id
        lookup = lookup.astype(dtype)
        if vocabulary.unknown_token:
            known = counts[token_ids >= 0].sum()
            self.kept = int(known) + (self.num_documents if char_level else 0)
        else:
            self.kept = self.num_tokens
        self.val_characters, self.val_held = 0, np.zeros(0, dtype=np.uint32)
        on_val = None if char_level else self.add_val_characters
        writer = DocumentWriter(directory, dtype, held_out, end, lookup, on_val)
        try:
            if char_level:
                pieces, size = [], 0
                end_code = np.array([END_CODE], dtype=np.uint32)
                for text in self.chunks("prepare: encoding"):
                    codes = end_code if text is DOCUMENT_END else code_points(text)
                    pieces.append(codes)
                    size += len(codes)
                    if size >= reading.CHUNK_BYTES:
                        writer.write(np.concatenate(pieces))
                        pieces, size = [], 0
                if pieces:
                    writer.write(np.concatenate(pieces))
            else:
                self.write_provisional(directory, writer.write)
                self.add_val_characters(np.zeros(0, dtype=np.uint32), final=True)
        finally:
            writer.close()
        self.num_val = writer.counts[1]
        self.document_counts = writer.document_counts
        order = None
        if self.document_options["document_order"] == "shuffled":
            order = shuffle_training_documents(directory, dtype, self.document_options["seed"])
        if self.label_names is not None:
            self.write_labels(directory, held_out, order)
        if char_level:
            self.val_characters_per_token = 1.0  # the end token counts as one character
        else:
            self.val_characters_per_token = self.val_characters / self.num_val

    def write_labels(self, directory, held_out, order=None):
        """LABELS, and each document's label id in its split's order (`order`: the training
        documents' shuffled order)."""
        train = self.document_labels[~held_out]
        for name, labels in (
            (TRAIN_LABELS, train if order is None else train[order]),
            (VAL_LABELS, self.document_labels[held_out]),
        ):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(labels.astype(LABEL_DTYPE).tobytes())
                f.flush()
                os.fsync(f.fileno())
        with open(os.path.join(directory, LABELS), "w", encoding="utf-8") as f:
            f.write(json.dumps(self.label_names, ensure_ascii=False))

    def write_provisional(self, directory, write, skip=None):
        """Reads the provisional ids back and passes them to `write` in chunks (without the id
        `skip`), then deletes their file. Read, not memory-mapped: mapped pages would count in
        the process's RSS."""
        provisional = os.path.join(directory, PROVISIONAL)
        with open(provisional, "rb") as f:
            step = reading.CHUNK_BYTES
            while len(ids := np.fromfile(f, dtype=np.uint32, count=step)):
                write(ids if skip is None else ids[ids != skip])
        os.unlink(provisional)

    def write_tail_split(self, directory, vocabulary, token_ids, counts, dtype, end):
        """One document: train.bin is the text's head, val.bin its tail (`val_fraction`)."""
        num_val = validation_length(self.num_tokens, self.options["val_fraction"])
        self.num_val = num_val
        char_level = self.options["level"] == "char"
        writer = SplitWriter(directory, self.num_tokens - num_val, dtype)
        kept = int(counts[token_ids >= 0].sum()) if vocabulary.unknown_token else self.num_tokens
        unknown = vocabulary.id(vocabulary.unknown_token) if vocabulary.unknown_token else 0
        lookup = np.where(token_ids >= 0, token_ids, unknown).astype(dtype)
        try:
            if char_level:
                for text in self.chunks("prepare: encoding"):
                    if text is not DOCUMENT_END:
                        writer.write(lookup[code_points(text)])
                val_characters_per_token = 1.0
            else:
                val_start, position = self.num_tokens - num_val, 0
                self.val_characters, self.val_held = 0, np.zeros(0, dtype=np.uint32)

                def write(ids):
                    nonlocal position
                    writer.write(lookup[ids])
                    self.add_val_characters(ids[max(0, val_start - position) :])
                    position += len(ids)

                self.write_provisional(directory, write, skip=end)
                self.add_val_characters(np.zeros(0, dtype=np.uint32), final=True)
                val_characters_per_token = (
                    self.val_characters / num_val
                    if num_val
                    else self.num_characters / self.num_tokens
                )
        finally:
            writer.close()
        self.kept, self.val_characters_per_token = kept, val_characters_per_token

    # ---- pass 1: counting ----
    def count_characters(self):
        """Counts of every code point (an array indexed by code point); the files are hashed on
        the way."""
        counts = np.zeros(CODE_POINTS, dtype=np.int64)
        self.num_characters = 0

        def count(text):
            self.num_characters += len(text)
            codes = code_points(text)
            if codes.dtype == np.uint8:
                counts[:128] += np.bincount(codes, minlength=128)
            else:
                counts[:] += np.bincount(codes, minlength=CODE_POINTS)

        # Short documents (lines) are counted a chunk's worth at a time.
        pieces, size = [], 0
        for text in self.chunks("prepare: counting", hashing=True):
            if text is not DOCUMENT_END:
                pieces.append(text)
                size += len(text)
            if size >= reading.CHUNK_BYTES:
                count("".join(pieces))
                pieces, size = [], 0
        if pieces:
            count("".join(pieces))
        return counts

    def word_chunks(self):
        """The text in pieces that the tokeniser may tokenise one by one (`chunk_end`), and
        DOCUMENT_END after each document: no piece spans two."""
        held = ""
        self.num_characters = 0
        for text in self.chunks("prepare: tokenising", hashing=True):
            if text is DOCUMENT_END:
                if held:
                    yield held
                held = ""
                yield DOCUMENT_END
                continue
            self.num_characters += len(text)
            text = held + text
            cut = self.tokenizer.chunk_end(text)
            if cut == 0 and len(text) > MAX_HELD_CHARS:
                cut = len(text)  # a "token" of megabytes (no line ends or spaces): cut it
            held = text[cut:]
            if self.tokenizer.name == "jieba":
                # Pieces of whole lines for the worker processes.
                start = 0
                while start < cut:
                    end = cut if cut - start <= JIEBA_CHUNK_CHARS else None
                    if end is None:
                        end = text.rfind(NEWLINE, start, start + JIEBA_CHUNK_CHARS) + 1
                        end = end if end > start else cut
                    yield text[start:end]
                    start = end
            elif cut:
                yield text[:cut]
        if held:
            yield held

    def provisional_ids(self):
        """The provisional ids of every piece of the text, as uint32 arrays, and of the end
        token after each document. regex and whitespace tokens never span white space, so
        those pieces go through a WordSplitter; jieba's are segmented in worker processes, one
        per core (jieba does about 1 MB/s on one)."""
        pieces = self.word_chunks()
        if self.tokenizer.name in ("regex", "whitespace"):
            splitter = WordSplitter(self.tokenizer, self.provisional)
            for piece in pieces:
                if piece is DOCUMENT_END:
                    yield np.array([self.provisional[END_OF_DOCUMENT]], dtype=np.uint32)
                else:
                    yield splitter.ids(piece)
            return
        if self.workers == 1:
            token_lists = (
                [END_OF_DOCUMENT] if piece is DOCUMENT_END else self.tokenizer.tokenize(piece)
                for piece in pieces
            )
        else:
            # fork where there is one: a spawned worker would import textgen, and so TensorFlow
            # (seconds and hundreds of MB each). The forked workers run only jieba, never
            # TensorFlow, so the parent's TensorFlow threads cannot deadlock them.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            pool = multiprocessing.get_context(method).Pool(self.workers)
            token_lists = pool.imap(_jieba_tokens, pieces, chunksize=1)
        try:
            for tokens in token_lists:
                yield np.fromiter(
                    map(self.provisional.__getitem__, tokens), dtype=np.uint32, count=len(tokens)
                )
        finally:
            if self.workers != 1:
                pool.terminate()

    def count_words(self, directory):
        """Token counts indexed by provisional id; the provisional ids go to a temporary file.
        The files are hashed on the way."""
        self.provisional = ProvisionalIds()
        counts = np.zeros(0, dtype=np.int64)
        with open(os.path.join(directory, PROVISIONAL), "wb") as f:
            for ids in self.provisional_ids():
                f.write(ids.tobytes())
                chunk_counts = np.bincount(ids, minlength=len(self.provisional))
                counts = np.pad(counts, (0, len(chunk_counts) - len(counts)))
                counts += chunk_counts
        return counts

    # ---- the vocabulary ----
    def vocabulary(self, counts):
        """(Vocabulary, id of every counted entry or -1 for <unk>): characters sorted by code
        point; words, and characters under --min-count or --max-vocab, by falling count, the
        rare ones mapped to <unk>. With several documents the end token comes first (after
        <unk>), whatever its count."""
        options = self.options
        ends = [END_OF_DOCUMENT] if self.uses_documents else []
        if options["level"] == "char":
            present = np.flatnonzero(counts)
            tokens = [chr(c) for c in present]
        else:
            present = np.arange(len(counts))
            tokens = self.provisional.new
        limited = options["min_count"] > 1 or options["max_vocab"] > 0
        if options["level"] == "char" and not limited:
            vocabulary = Vocabulary(ends + tokens)
        else:
            vocabulary = Vocabulary.from_counts(
                dict(zip(tokens, counts[present].tolist())),
                specials=[UNKNOWN, *ends],
                min_count=options["min_count"],
                max_size=options["max_vocab"] or None,
                unknown_token=UNKNOWN,
            )
            if len(vocabulary) < 2 + len(ends):
                raise UsageError(
                    f"`min_count` {options['min_count']} leaves no token in the vocabulary (the "
                    f"most frequent one occurs {int(counts.max())} times); lower `min_count`"
                )
        token_ids = np.full(len(counts), -1, dtype=np.int64)
        token_ids[present] = [vocabulary.index.get(t, -1) for t in tokens]
        return vocabulary, token_ids

    def add_val_characters(self, ids, final=False):
        """Adds to `val_characters` the length of the text that validation ids stand for (what
        bits per character are measured against). The ids are detokenised piece by piece, each
        cut after a newline token, which gives the length of the whole detokenised at once; the
        ids after the last newline wait for the next call."""
        if len(self.val_held):
            ids = np.concatenate([self.val_held, ids])
        cut = len(ids)
        if not final:
            newlines = np.flatnonzero(
                (ids == self.provisional.get(NEWLINE, -1))
                | (ids == self.provisional.get(END_OF_DOCUMENT, -1))
            )
            if len(newlines):
                cut = int(newlines[-1]) + 1
            elif len(ids) < MAX_HELD_CHARS:
                cut = 0
        self.val_held = ids[cut:]
        if cut:
            tokens = self.provisional.new
            piece = [tokens[i] for i in ids[:cut].tolist()]
            if self.uses_documents:  # the end token counts as one character, as a line end
                piece = [NEWLINE if t == END_OF_DOCUMENT else t for t in piece]
            self.val_characters += len(self.tokenizer.detokenize(piece))
