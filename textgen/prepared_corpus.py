"""A corpus prepared for training: its vocabulary, and its token ids as flat binary files that
training memory-maps, so that a corpus of any size trains in bounded memory (nanoGPT's
`train.bin`/`val.bin`, torch-rnn's preprocessing step).

    DIR/header.json   format and version, id dtype, counts, characters per token, the source
                      file's path, size, mtime and SHA-256, the tokenisation flags
    DIR/vocab.json    the Vocabulary (as in a run directory)
    DIR/train.bin     the training token ids: the corpus's head, little-endian `dtype`
    DIR/val.bin       the validation token ids: its contiguous tail

The dtype is the narrowest that holds every id: uint8 up to 256 tokens, uint16 up to 65,536,
uint32 beyond. Preparing reads the text in chunks, twice at most: a first pass counts the
vocabulary (at word level it also writes provisional ids, in order of first appearance, to a
temporary file, so the text is tokenised once), a second writes the final ids. Everything is
written into a temporary directory that is renamed into place at the end, so a crash or a full
disk leaves the previous directory, or none, never half of one.

`textgen.train --data FILE` prepares into a cache directory keyed by the file's SHA-256 and the
tokenisation flags (`corpus_for_training`); `--data DIR` takes a directory that
`python -m textgen.prepare` wrote.
"""

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

from textgen.corpus import CHUNK_BYTES, check_corpus_file, read_chunks, validation_length
from textgen.errors import UsageError
from textgen.io import disk_full, is_disk_full, replace_directory, size_text
from textgen.tokenizers import NEWLINE, looks_chinese, make_tokenizer
from textgen.vocabulary import Vocabulary

FORMAT = "textgen-prepared-corpus"
VERSION = 1
HEADER, VOCABULARY, TRAIN, VALIDATION = "header.json", "vocab.json", "train.bin", "val.bin"
PROVISIONAL = "provisional_ids.tmp"
UNKNOWN = "<unk>"
# (dtype, how many distinct ids it holds), narrowest first.
DTYPES = (("uint8", 2**8), ("uint16", 2**16), ("uint32", 2**32))
CODE_POINTS = 0x110000
# The flags that decide the prepared ids: a cache entry is keyed by them and the file's hash.
TOKENISATION = (
    "encoding",
    "keep_newlines",
    "level",
    "segmenter",
    "min_count",
    "max_vocab",
    "val_fraction",
)
# Cache entries kept (the most recently used): tests and experiments leave many small ones.
CACHE_ENTRIES = 16
# Text per task handed to a jieba worker process.
JIEBA_CHUNK_CHARS = 1 << 18


def ids_dtype(vocabulary_size):
    """The narrowest unsigned dtype that holds ids 0 .. vocabulary_size - 1."""
    for name, limit in DTYPES:
        if vocabulary_size <= limit:
            return name
    raise UsageError(
        f"a vocabulary of {vocabulary_size:,} tokens overflows uint32, the widest id type; "
        "lower --max-vocab or raise --min-count"
    )


def tokenisation(config):
    """The tokenisation flags of a TrainConfig or PrepareConfig, as a dict."""
    return {name: getattr(config, name) for name in TOKENISATION}


def prepare_command(source, directory):
    return f"python -m textgen.prepare --data {source} --out {directory}"


def file_sha256(path, on_bytes=None):
    """The SHA-256 of a file, read in chunks (about 1 GB/s with SHA extensions)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(block)
    return digest.hexdigest()


def resolve_segmenter(source, options):
    """`options` with --segmenter auto replaced by what it picks from the text's start (jieba
    for Chinese, regex otherwise), so that the prepared corpus and the run name the same one."""
    if options["level"] != "word" or options["segmenter"] != "auto":
        return dict(options)
    head = next(read_chunks(source, options["encoding"], options["keep_newlines"], 1 << 16), "")
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
    """The code points of a str as a uint32 array, at C speed."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class SplitWriter:
    """Writes a stream of id arrays to train.bin until `train_tokens` ids are written, the rest
    to val.bin."""

    def __init__(self, directory, train_tokens, dtype):
        self.files = [open(os.path.join(directory, name), "wb") for name in (TRAIN, VALIDATION)]
        self.left, self.dtype = train_tokens, dtype

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
    runs at C speed for the tokens already seen."""

    def __missing__(self, token):
        value = self[token] = len(self)
        return value


def _jieba_tokens(text):
    from textgen.tokenizers import JiebaTokenizer

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

            yield from read_chunks(
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
                f"corpus file {self.source} holds no text; pass --data with a non-empty text file"
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
                provisional = os.path.join(directory, PROVISIONAL)
                ids = np.memmap(provisional, dtype=np.uint32, mode="r")
                step = CHUNK_BYTES
                for start in range(0, len(ids), step):
                    writer.write(lookup[ids[start : start + step]])
                val_characters_per_token = self.val_characters_per_token(ids, num_val)
                del ids
                os.unlink(provisional)
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
            if text.isascii():  # the common case, 6x faster as bytes
                ascii_bytes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
                counts[:128] += np.bincount(ascii_bytes, minlength=128)
            else:
                counts += np.bincount(code_points(text), minlength=CODE_POINTS)
        return counts

    def word_chunks(self, on_bytes):
        """The text in pieces that the tokeniser may tokenise one by one (`chunk_end`)."""
        held = ""
        self.num_characters = 0
        for text in self.chunks("prepare: tokenising", on_bytes):
            self.num_characters += len(text)
            text = held + text
            cut = self.tokenizer.chunk_end(text)
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

    def token_lists(self, on_bytes):
        """The tokens of every piece; jieba's in worker processes, one per core (jieba
        segments about 1 MB/s on one)."""
        pieces = self.word_chunks(on_bytes)
        if self.tokenizer.name != "jieba" or self.workers == 1:
            yield from map(self.tokenizer.tokenize, pieces)
            return
        # fork where there is one: a spawned worker would import textgen, and so TensorFlow
        # (seconds and hundreds of MB each). The forked workers run only jieba, never
        # TensorFlow, so the parent's TensorFlow threads cannot deadlock them.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(self.workers) as pool:
            yield from pool.imap(_jieba_tokens, pieces, chunksize=1)

    def count_words(self, directory, on_bytes):
        """Token counts indexed by provisional id; the provisional ids go to a temporary file."""
        self.provisional = ProvisionalIds()
        counts = np.zeros(0, dtype=np.int64)
        with open(os.path.join(directory, PROVISIONAL), "wb") as f:
            for tokens in self.token_lists(on_bytes):
                ids = np.fromiter(
                    map(self.provisional.__getitem__, tokens), dtype=np.uint32, count=len(tokens)
                )
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
            tokens = list(self.provisional)
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
                    f"--min-count {options['min_count']} leaves no token in the vocabulary (the "
                    f"most frequent one occurs {int(counts.max())} times); lower --min-count"
                )
        token_ids = np.full(len(counts), -1, dtype=np.int64)
        token_ids[present] = [vocabulary.index.get(t, -1) for t in tokens]
        return vocabulary, token_ids

    def val_characters_per_token(self, provisional_ids, num_val):
        """Characters of the original text that the validation tokens stand for, per token (what
        bits per character are measured against): detokenised piece by piece, each cut after a
        newline token, which gives the length of the whole detokenised at once."""
        if num_val == 0:
            return self.num_characters / self.num_tokens
        tokens = list(self.provisional)
        newline = self.provisional.get(NEWLINE, -1)
        start, end, characters = len(provisional_ids) - num_val, len(provisional_ids), 0
        while start < end:
            stop = min(end, start + CHUNK_BYTES)
            if stop < end:
                newlines = np.flatnonzero(provisional_ids[start:stop] == newline)
                stop = start + int(newlines[-1]) + 1 if len(newlines) else stop
            piece = [tokens[i] for i in provisional_ids[start:stop].tolist()]
            characters += len(self.tokenizer.detokenize(piece))
            start = stop
        return characters / num_val


def prepare_corpus(source, out, options, progress=None, workers=0):
    """Prepares `source` with the tokenisation `options` into the directory `out`, atomically;
    returns its PreparedCorpus. UsageError for bad input and DiskFull for a disk too small, with
    nothing written either way."""
    source, out = os.fspath(source), os.fspath(out)
    check_corpus_file(source, options["encoding"])
    options = resolve_segmenter(source, options)
    preparation = CorpusPreparation(source, options, progress, workers)
    try:
        replace_directory(out, preparation.write)
    except OSError as error:
        if not is_disk_full(error):
            raise
        itemsize = np.dtype(ids_dtype(getattr(preparation, "vocabulary_size", 256))).itemsize
        needed = getattr(preparation, "num_tokens", preparation.size) * itemsize
        raise disk_full(
            out,
            needed,
            "nothing was written",
            "free some space or pass an --out on another disk",
        ) from None
    return PreparedCorpus.open(out, check_source=False)


class PreparedCorpus:
    """A prepared directory, opened: `vocabulary`, `train_ids` and `val_ids` (read-only memory
    maps), and the header's counts and flags. `open` checks the format, the files' sizes and,
    when the source file is still there, that it has not changed."""

    def __init__(self, path, header, vocabulary, train_ids, val_ids):
        self.path, self.header, self.vocabulary = path, header, vocabulary
        self.train_ids, self.val_ids = train_ids, val_ids
        self.tokenisation = header["tokenisation"]
        self.num_tokens = header["tokens"]
        self.coverage = header["coverage"]
        self.val_characters_per_token = header["val_characters_per_token"]

    @classmethod
    def open(cls, path, check_source=True):
        path = os.fspath(path)
        header_path = os.path.join(path, HEADER)
        if not os.path.isfile(header_path):
            raise UsageError(
                f"{path} is a directory but not a prepared corpus (it has no {HEADER}); pass "
                "--data with a text file, or with a directory that "
                f"`{prepare_command('FILE', path)}` wrote"
            )
        from textgen.run_directory import read_json_file

        again = f"prepare it again with `{prepare_command('FILE', path)}`"
        header = read_json_file(header_path, fix=again)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise UsageError(
                f"{header_path} is not the header of a textgen prepared corpus; {again}"
            )
        source = header.get("source") if isinstance(header.get("source"), dict) else {}
        if isinstance(source.get("path"), str):
            again = f"prepare it again with `{prepare_command(source['path'], path)}`"
        if header.get("version") != VERSION:
            raise UsageError(
                f"{path} is a prepared corpus of format version {header.get('version')!r}, and "
                f"this textgen reads version {VERSION}; {again}"
            )
        check_header(header, header_path, again)
        dtype, limits = header["dtype"], dict(DTYPES)
        try:
            vocabulary = Vocabulary.from_config(
                read_json_file(os.path.join(path, VOCABULARY), fix=again)
            )
        except FileNotFoundError:
            raise UsageError(f"{path} has no {VOCABULARY}; {again}") from None
        except ValueError as error:
            raise UsageError(
                f"{os.path.join(path, VOCABULARY)} is not a valid vocabulary ({error}); {again}"
            ) from None
        if len(vocabulary) > limits[dtype]:
            raise UsageError(
                f"{path}: its vocabulary has {len(vocabulary):,} tokens, more than its ids' "
                f"dtype {dtype} can number ({limits[dtype]:,}); {again}"
            )
        if len(vocabulary) != header["vocabulary_size"]:
            raise UsageError(
                f"{path}: {VOCABULARY} has {len(vocabulary):,} tokens and {HEADER} says "
                f"{header['vocabulary_size']:,}; {again}"
            )
        arrays = [
            map_ids(os.path.join(path, name), dtype, header[count], again)
            for name, count in ((TRAIN, "train_tokens"), (VALIDATION, "val_tokens"))
        ]
        if check_source:
            check_unchanged_source(path, source, again)
        return cls(path, header, vocabulary, *arrays)


def check_header(header, header_path, again):
    """UsageError unless the header has every field, of the right type."""
    fields = {
        "dtype": str,
        "vocabulary_size": int,
        "tokens": int,
        "train_tokens": int,
        "val_tokens": int,
        "coverage": (int, float),
        "val_characters_per_token": (int, float),
        "source": dict,
        "tokenisation": dict,
    }
    for name, types in fields.items():
        if not isinstance(header.get(name), types) or isinstance(header.get(name), bool):
            raise UsageError(f"{header_path}: {name} is missing or of the wrong type; {again}")
    if header["dtype"] not in dict(DTYPES):
        raise UsageError(
            f"{header_path}: dtype {header['dtype']!r} is not one of "
            f"{', '.join(name for name, _ in DTYPES)}; {again}"
        )
    if sorted(header["tokenisation"]) != sorted(TOKENISATION):
        raise UsageError(f"{header_path}: the tokenisation flags are incomplete; {again}")


def map_ids(path, dtype, count, again):
    """The ids in `path`, memory-mapped read-only; UsageError unless it holds `count` of them."""
    expected = count * np.dtype(dtype).itemsize
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if size != expected:
        found = "is missing" if size is None else f"holds {size:,} bytes"
        raise UsageError(f"{path} {found}, the header says {expected:,}; {again}")
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def check_unchanged_source(path, source, again):
    """UsageError if the file the directory was prepared from is there but holds other bytes.
    Same size and mtime are taken as unchanged; otherwise the hash decides."""
    source_path = source.get("path")
    if not isinstance(source_path, str) or not os.path.isfile(source_path):
        return  # moved or deleted: the prepared directory stands on its own
    stat = os.stat(source_path)
    if stat.st_size == source.get("size") and stat.st_mtime_ns == source.get("mtime_ns"):
        return
    if stat.st_size == source.get("size") and file_sha256(source_path) == source.get("sha256"):
        return
    raise UsageError(
        f"{path} was prepared from {source_path}, which has changed since (now "
        f"{size_text(stat.st_size)}, then {size_text(source.get('size') or 0)}, other "
        f"contents); {again}"
    )


# ---- the cache of `textgen.train --data FILE` ----
def cache_root():
    """Where `--data FILE` corpora are prepared: TEXTGEN_CACHE_DIR/corpora, the directory that
    textgen.native_ops builds into (default $XDG_CACHE_HOME/textgen, else ~/.cache/textgen)."""
    if os.environ.get("TEXTGEN_CACHE_DIR"):
        base = os.environ["TEXTGEN_CACHE_DIR"]
    else:
        base = os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "textgen"
        )
    return os.path.join(base, "corpora")


def cache_key(sha256, options):
    flags = json.dumps({"version": VERSION, "sha256": sha256, **options}, sort_keys=True)
    return hashlib.sha256(flags.encode("utf-8")).hexdigest()[:24]


def cached_corpus(source, options, progress=None, log=None):
    """The PreparedCorpus of `source` with `options`, from the cache, prepared there first when
    it is not (or is damaged). Hashing the file costs about 1 s per GB."""
    source = os.fspath(source)
    check_corpus_file(source, options["encoding"])
    options = resolve_segmenter(source, options)
    with progress_bar(os.path.getsize(source), "hashing the corpus", progress) as bar:
        sha256 = file_sha256(source, lambda raw: bar.update(len(raw)))
    entry = os.path.join(cache_root(), cache_key(sha256, options))
    if os.path.isfile(os.path.join(entry, HEADER)):
        try:
            corpus = PreparedCorpus.open(entry, check_source=False)
            os.utime(os.path.join(entry, HEADER))  # the last use, which pruning goes by
            return corpus
        except UsageError:
            pass  # a damaged entry is prepared again
    os.makedirs(cache_root(), exist_ok=True)
    started = time.monotonic()
    corpus = prepare_corpus(source, entry, options, progress)
    if log is not None:
        seconds = time.monotonic() - started
        log(
            f"prepared {source} ({size_text(os.path.getsize(source))}) in {seconds:.1f} s into "
            f"{entry}; later runs on the same file and flags reuse it"
        )
    prune_cache(keep=entry)
    return corpus


def prune_cache(keep, entries=CACHE_ENTRIES):
    """Removes all but the `entries` most recently used cache entries, and temporary
    directories an interrupted preparation left behind over a day ago."""
    root = cache_root()
    used = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        try:
            if name.startswith("."):
                if time.time() - os.path.getmtime(path) > 86400:
                    shutil.rmtree(path, ignore_errors=True)
                continue
            used.append((os.path.getmtime(os.path.join(path, HEADER)), path))
        except OSError:
            continue
    for _, path in sorted(used, reverse=True)[entries:]:
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


def corpus_for_training(config, explicit=(), progress=None, log=None):
    """The PreparedCorpus that `textgen.train --data` names: a prepared directory, or a text file
    prepared into the cache. With a directory, the config's tokenisation flags are set from its
    header (so config.json records them); a flag given that differs is a UsageError."""
    if not os.path.isdir(config.data):
        corpus = cached_corpus(config.data, tokenisation(config), progress, log)
        config.segmenter = corpus.tokenisation["segmenter"]  # auto resolved: reloads the same
        return corpus
    corpus = PreparedCorpus.open(config.data)
    for name in TOKENISATION:
        prepared = corpus.tokenisation[name]
        if (
            name in explicit
            and getattr(config, name) != prepared
            and not (name == "segmenter" and config.segmenter == "auto")
        ):
            raise UsageError(
                f"--{name.replace('_', '-')} {getattr(config, name)!r} does not match "
                f"{config.data}, prepared with {prepared!r}; drop the flag, or prepare the "
                "corpus again with it"
            )
        setattr(config, name, prepared)
    return corpus


def main_prepare(config, progress=None):
    """`python -m textgen.prepare`: prepares config.data into config.out; prints what it wrote."""
    out = config.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a directory; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, HEADER)):
        raise UsageError(
            f"--out {out} is a directory that holds other files than a prepared corpus; "
            "choose another --out"
        )
    started = time.monotonic()
    corpus = prepare_corpus(config.data, out, tokenisation(config), progress, config.workers)
    seconds = time.monotonic() - started
    header = corpus.header
    rate = header["source"]["size"] / 1e6 / max(seconds, 1e-9)
    print(
        f"prepared {config.data} ({size_text(header['source']['size'])}) in {seconds:.1f} s "
        f"({rate:.1f} MB/s): {header['vocabulary_size']:,} tokens in the vocabulary, "
        f"{header['train_tokens']:,} train / {header['val_tokens']:,} validation ids as "
        f"{header['dtype']} in {out}",
        file=sys.stdout,
    )
    return corpus
