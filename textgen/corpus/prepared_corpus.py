"""A corpus prepared for training: its vocabulary, and its token ids as flat binary files that
training memory-maps, so that a corpus of any size trains in bounded memory (nanoGPT's
`train.bin`/`val.bin`, torch-rnn's preprocessing step).

    DIR/header.json   format and version, id dtype, counts, characters per token, the source
                      file's path, size, mtime and SHA-256, the tokenisation flags
    DIR/vocab.json    the Vocabulary (as in a run directory)
    DIR/train.bin     the training token ids: the corpus's head, little-endian `dtype`
    DIR/val.bin       the validation token ids: its contiguous tail

The dtype is the narrowest that holds every id: uint8 up to 256 tokens, uint16 up to 65,536,
uint32 beyond. `textgen.corpus.preparation` writes it, into a temporary directory that is
renamed into place at the end, so a crash or a full disk leaves the previous directory, or
none, never half of one.

`textgen.train --data FILE` prepares into a cache directory keyed by the file's SHA-256 and the
tokenisation flags (`corpus_for_training`); `--data DIR` takes a directory that
`python -m textgen.prepare` wrote.
"""

import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np

from textgen.corpus.preparation import (
    DTYPES,
    FORMAT,
    HEADER,
    TRAIN,
    VALIDATION,
    VERSION,
    VOCABULARY,
    CorpusPreparation,
    ids_dtype,
    progress_bar,
    resolve_segmenter,
)
from textgen.corpus.reading import CHUNK_BYTES, check_corpus_file
from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError
from textgen.io import disk_full, is_disk_full, replace_directory, size_text

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
            "free some space or pass an `out` on another disk",
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
                "`data` with a text file, or with a directory that "
                f"`{prepare_command('FILE', path)}` wrote"
            )
        from textgen.training.run_directory import read_json_file

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
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


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
    textgen.network.native_ops builds into (default $XDG_CACHE_HOME/textgen, else
    ~/.cache/textgen)."""
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
                f"`{name}` {getattr(config, name)!r} does not match "
                f"{config.data}, prepared with {prepared!r}; drop the flag, or prepare the "
                "corpus again with it"
            )
        setattr(config, name, prepared)
    return corpus


def main_prepare(config, progress=None):
    """`python -m textgen.prepare`: prepares config.data into config.out; prints what it wrote."""
    out = config.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"`out` {out} exists and is not a directory; choose another `out`")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, HEADER)):
        raise UsageError(
            f"`out` {out} is a directory that holds other files than a prepared corpus; "
            "choose another `out`"
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
