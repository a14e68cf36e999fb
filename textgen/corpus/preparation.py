"""CorpusPreparation: a text file tokenised, in chunks, into the files of a prepared corpus
(`textgen.corpus.prepared_corpus` reads them; its docstring has the layout).

The text is read twice at most. A first pass counts the vocabulary: characters by code point
(NumPy's bincount over each chunk's code points), words by provisional id, given in order of
first appearance and written to a temporary file, so that the text is tokenised once. A second
pass writes the final ids: characters through a code point -> id table, words through a
provisional id -> id table over that file. Memory stays bounded by a chunk and the vocabulary.
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
from textgen.corpus.stream_batches import validation_length
from textgen.corpus.tokenizers import NEWLINE, looks_chinese, make_tokenizer
from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError

FORMAT = "textgen-prepared-corpus"
VERSION = 1
HEADER, VOCABULARY, TRAIN, VALIDATION = "header.json", "vocab.json", "train.bin", "val.bin"
PROVISIONAL = "provisional_ids.tmp"
UNKNOWN = "<unk>"
# (dtype, how many distinct ids it holds), narrowest first.
DTYPES = (("uint8", 2**8), ("uint16", 2**16), ("uint32", 2**32))
CODE_POINTS = 0x110000
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
    for Chinese, regex otherwise), so that the prepared corpus and the run name the same one."""
    if options["level"] != "word" or options["segmenter"] != "auto":
        return dict(options)
    head = next(
        reading.read_chunks(source, options["encoding"], options["keep_newlines"], 1 << 16), ""
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
    from textgen.corpus.tokenizers import JiebaTokenizer

    global _JIEBA
    if "_JIEBA" not in globals():
        _JIEBA = JiebaTokenizer()
    return _JIEBA.tokenize(text)


class CorpusPreparation:
    """One preparation of `source` with `options` (the tokenisation flags, segmenter resolved)
    into a directory: `write(directory)` does both passes there."""

    def __init__(self, source, options, progress=None, workers=0):
        self.source, self.options = os.fspath(source), options
        self.progress, self.workers = progress, workers or os.cpu_count() or 1
        self.size = os.path.getsize(self.source)
        self.tokenizer = make_tokenizer(options["level"], options["segmenter"])

    def chunks(self, description, on_bytes=None):
        """The text in chunks, with a progress bar over the file's bytes."""
        with progress_bar(self.size, description, self.progress) as bar:

            def seen(raw):
                bar.update(len(raw))
                if on_bytes is not None:
                    on_bytes(raw)

            yield from reading.read_chunks(
                self.source, self.options["encoding"], self.options["keep_newlines"], on_bytes=seen
            )

    def write(self, directory):
        started = time.monotonic()
        digest = hashlib.sha256()
        char_level = self.options["level"] == "char"
        if char_level:
            counts = self.count_characters(digest.update)
        else:
            counts = self.count_words(directory, digest.update)
        self.num_tokens = int(counts.sum())
        if self.num_characters == 0:
            raise UsageError(
                f"corpus file {self.source} holds no text; pass `data` with a non-empty text file"
            )
        vocabulary, token_ids = self.vocabulary(counts)
        self.vocabulary_size = len(vocabulary)
        dtype = ids_dtype(len(vocabulary))
        itemsize = np.dtype(dtype).itemsize
        free = shutil.disk_usage(directory).free
        if free < self.num_tokens * itemsize:
            raise OSError(28, os.strerror(28))  # ENOSPC before writing, not midway
        num_val = validation_length(self.num_tokens, self.options["val_fraction"])
        writer = SplitWriter(directory, self.num_tokens - num_val, dtype)
        kept = int(counts[token_ids >= 0].sum()) if vocabulary.unknown_token else self.num_tokens
        unknown = vocabulary.id(vocabulary.unknown_token) if vocabulary.unknown_token else 0
        lookup = np.where(token_ids >= 0, token_ids, unknown).astype(dtype)
        try:
            if char_level:
                for text in self.chunks("prepare: encoding"):
                    writer.write(lookup[code_points(text)])
                val_characters_per_token = 1.0
            else:
                # Read, not memory-mapped: mapped pages would count in the process's RSS.
                provisional = os.path.join(directory, PROVISIONAL)
                val_start, position = self.num_tokens - num_val, 0
                self.val_characters, self.val_held = 0, np.zeros(0, dtype=np.uint32)
                with open(provisional, "rb") as f:
                    step = reading.CHUNK_BYTES
                    while len(ids := np.fromfile(f, dtype=np.uint32, count=step)):
                        writer.write(lookup[ids])
                        self.add_val_characters(ids[max(0, val_start - position) :])
                        position += len(ids)
                self.add_val_characters(np.zeros(0, dtype=np.uint32), final=True)
                os.unlink(provisional)
                val_characters_per_token = (
                    self.val_characters / num_val
                    if num_val
                    else self.num_characters / self.num_tokens
                )
        finally:
            writer.close()
        vocabulary.save(os.path.join(directory, VOCABULARY))
        stat = os.stat(self.source)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": dtype,
            "vocabulary_size": len(vocabulary),
            "tokens": self.num_tokens,
            "train_tokens": self.num_tokens - num_val,
            "val_tokens": num_val,
            "characters": self.num_characters,
            "characters_per_token": self.num_characters / self.num_tokens,
            "val_characters_per_token": val_characters_per_token,
            "coverage": kept / self.num_tokens,
            "seconds": time.monotonic() - started,
            "source": {
                "path": os.path.abspath(self.source),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": digest.hexdigest(),
            },
            "tokenisation": self.options,
        }
        with open(os.path.join(directory, HEADER), "w", encoding="utf-8") as f:
            f.write(json.dumps(header, indent=1, ensure_ascii=False))

    # ---- pass 1: counting ----
    def count_characters(self, on_bytes):
        """Counts of every code point (an array indexed by code point)."""
        counts = np.zeros(CODE_POINTS, dtype=np.int64)
        self.num_characters = 0
        for text in self.chunks("prepare: counting", on_bytes):
            self.num_characters += len(text)
            codes = code_points(text)
            if codes.dtype == np.uint8:
                counts[:128] += np.bincount(codes, minlength=128)
            else:
                counts += np.bincount(codes, minlength=CODE_POINTS)
        return counts

    def word_chunks(self, on_bytes):
        """The text in pieces that the tokeniser may tokenise one by one (`chunk_end`)."""
        held = ""
        self.num_characters = 0
        for text in self.chunks("prepare: tokenising", on_bytes):
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

    def provisional_ids(self, on_bytes):
        """The provisional ids of every piece of the text, as uint32 arrays. regex and
        whitespace tokens never span white space, so those pieces go through a WordSplitter;
        jieba's are segmented in worker processes, one per core (jieba does about 1 MB/s on
        one)."""
        pieces = self.word_chunks(on_bytes)
        if self.tokenizer.name in ("regex", "whitespace"):
            splitter = WordSplitter(self.tokenizer, self.provisional)
            yield from map(splitter.ids, pieces)
            return
        if self.workers == 1:
            token_lists = map(self.tokenizer.tokenize, pieces)
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

    def count_words(self, directory, on_bytes):
        """Token counts indexed by provisional id; the provisional ids go to a temporary file."""
        self.provisional = ProvisionalIds()
        counts = np.zeros(0, dtype=np.int64)
        with open(os.path.join(directory, PROVISIONAL), "wb") as f:
            for ids in self.provisional_ids(on_bytes):
                f.write(ids.tobytes())
                chunk_counts = np.bincount(ids, minlength=len(self.provisional))
                counts = np.pad(counts, (0, len(chunk_counts) - len(counts)))
                counts += chunk_counts
        return counts

    # ---- the vocabulary ----
    def vocabulary(self, counts):
        """(Vocabulary, id of every counted entry or -1 for <unk>): characters sorted by code
        point; words, and characters under --min-count or --max-vocab, by falling count, the
        rare ones mapped to <unk>."""
        options = self.options
        if options["level"] == "char":
            present = np.flatnonzero(counts)
            tokens = [chr(c) for c in present]
        else:
            present = np.arange(len(counts))
            tokens = self.provisional.new
        limited = options["min_count"] > 1 or options["max_vocab"] > 0
        if options["level"] == "char" and not limited:
            vocabulary = Vocabulary(tokens)
        else:
            vocabulary = Vocabulary.from_counts(
                dict(zip(tokens, counts[present].tolist())),
                specials=[UNKNOWN],
                min_count=options["min_count"],
                max_size=options["max_vocab"] or None,
                unknown_token=UNKNOWN,
            )
            if len(vocabulary) < 2:
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
            newlines = np.flatnonzero(ids == self.provisional.get(NEWLINE, -1))
            if len(newlines):
                cut = int(newlines[-1]) + 1
            elif len(ids) < MAX_HELD_CHARS:
                cut = 0
        self.val_held = ids[cut:]
        if cut:
            tokens = self.provisional.new
            piece = [tokens[i] for i in ids[:cut].tolist()]
            self.val_characters += len(self.tokenizer.detokenize(piece))
