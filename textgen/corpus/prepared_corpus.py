"""A corpus prepared for training: its vocabulary, and its token ids as flat binary files that
training memory-maps, so that a corpus of any size trains in bounded memory (nanoGPT's
`train.bin`/`val.bin`, torch-rnn's preprocessing step).

    DIR/header.json   format and version, id dtype, counts, characters per token, the source
                      files' paths, sizes, mtimes and SHA-256s (`sources`; `source` is the
                      one file, or their summary), the documents (`documents`: how many, the
                      boundary rule, how they were split, the end token), the tokenisation
                      flags
    DIR/vocab.json    the Vocabulary (as in a run directory)
    DIR/train.bin     the training token ids, little-endian `dtype`: the corpus's head, or with
                      several documents the documents not held out, each ending with the
                      end-of-document token
    DIR/val.bin       the validation token ids: its contiguous tail, or the held-out documents
    DIR/train_documents.bin, DIR/val_documents.bin
                      with several documents: where each starts in train.bin's and val.bin's
                      ids (little-endian uint64)
    DIR/labels.json, DIR/train_labels.bin, DIR/val_labels.bin
                      with --labels: the label names (<none> first), and each document's
                      label id, in the order of the offsets (little-endian uint32)

The dtype is the narrowest that holds every id: uint8 up to 256 tokens, uint16 up to 65,536,
uint32 beyond. `textgen.corpus.preparation` writes it, into a temporary directory that is
renamed into place at the end, so a crash or a full disk leaves the previous directory, or
none, never half of one.

`textgen.train --data FILE` (or a folder, or several paths) prepares into a cache directory keyed
by the files' SHA-256 and the tokenisation and document flags (`corpus_for_training`);
`--data DIR` takes a directory that `python -m textgen.prepare` wrote.
"""

import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np

from textgen.corpus.documents import (
    data_paths,
    describe_data,
    file_labels,
    folder_files,
    source_files,
)
from textgen.corpus.preparation import (
    DOCUMENT_OPTIONS,
    DTYPES,
    FORMAT,
    HEADER,
    LABEL_DTYPE,
    LABELS,
    OFFSET_DTYPE,
    TRAIN,
    TRAIN_DOCUMENTS,
    TRAIN_LABELS,
    VAL_DOCUMENTS,
    VAL_LABELS,
    VALIDATION,
    VERSION,
    VOCABULARY,
    CorpusPreparation,
    files_sha256,
    ids_dtype,
    progress_bar,
    resolve_segmenter,
)
from textgen.corpus.reading import CHUNK_BYTES
from textgen.corpus.vocabulary import END_OF_DOCUMENT, Vocabulary
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


def document_options(config):
    """The document flags of a TrainConfig or PrepareConfig (`--glob`, `--document-boundary`,
    `--labels`, `--document-order` with auto resolved, and `--seed`, which chooses the
    held-out documents and the shuffled order), as a dict."""
    options = {name: getattr(config, name) for name in DOCUMENT_OPTIONS}
    if options["document_order"] == "auto":
        options["document_order"] = "shuffled" if config.labels else "corpus"
    return options


def prepare_command(source, directory, documents=None):
    """The command that prepares `source` into `directory` (with the document flags of
    `documents`, a header's record, that are not the defaults)."""
    flags = ""
    if documents and documents.get("glob"):
        flags += f" --glob '{documents['glob']}'"
    if documents and documents.get("boundary", "file") != "file":
        flags += f" --document-boundary '{documents['boundary']}'"
    if documents and documents.get("labels"):
        flags += f" --labels {documents['labels']}"
    if documents and documents.get("order", "corpus") != "corpus":
        flags += f" --document-order {documents['order']}"
    if documents and documents.get("split") == "documents":
        flags += f" --seed {documents.get('seed', 0)}"
    return f"python -m textgen.prepare --data {source}{flags} --out {directory}"


def file_sha256(path, on_bytes=None):
    """The SHA-256 of a file, read in chunks (about 1 GB/s with SHA extensions)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(block)
    return digest.hexdigest()


def prepare_corpus(source, out, options, progress=None, workers=0, documents=None):
    """Prepares `source` (a file, a folder or a list of them: `textgen.corpus.documents`) with
    the tokenisation `options` and the document flags `documents` (DOCUMENT_OPTIONS; default:
    each file one document) into the directory `out`, atomically; returns its PreparedCorpus.
    UsageError for bad input and DiskFull for a disk too small, with nothing written either
    way."""
    out = os.fspath(out)
    documents = {**DOCUMENT_OPTIONS, **(documents or {})}
    files = source_files(source, documents["glob"], options["encoding"])
    return prepare_files(files, source, out, options, documents, progress, workers)


def prepare_files(files, source, out, options, documents, progress=None, workers=0):
    """`prepare_corpus` of the checked `files` that `source` names."""
    options = resolve_segmenter(files, options)
    documents = {**documents, "data": data_paths(source)}
    preparation = CorpusPreparation(files, options, progress, workers, documents)
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
    when the source files are still there, that they have not changed.

    `documents` is the header's record of the documents (one, split at the tail, for a
    directory prepared before documents existed); with several, `document_offsets` are the
    (train, validation) memory maps of where each document starts in `train_ids` and
    `val_ids`, else None. With labels, `label_names` lists them (<none> first) and
    `document_labels` are the (train, validation) arrays of each document's label id; both
    None without."""

    def __init__(
        self, path, header, vocabulary, train_ids, val_ids, document_offsets=None, labels=None
    ):
        self.path, self.header, self.vocabulary = path, header, vocabulary
        self.train_ids, self.val_ids = train_ids, val_ids
        self.tokenisation = header["tokenisation"]
        self.num_tokens = header["tokens"]
        self.coverage = header["coverage"]
        self.val_characters_per_token = header["val_characters_per_token"]
        self.documents = header.get("documents") or SINGLE_DOCUMENT
        self.document_offsets = document_offsets
        self.label_names, self.document_labels = labels or (None, None)

    @property
    def num_documents(self):
        return self.documents["count"]

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
            documents = header.get("documents") if isinstance(header.get("documents"), dict) else {}
            again = f"prepare it again with `{prepare_command(source['path'], path, documents)}`"
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
        offsets = check_documents(path, header, vocabulary, again)
        labels = check_labels(path, header, again)
        if check_source:
            check_unchanged_source(path, source, again, header)
        return cls(path, header, vocabulary, *arrays, offsets, labels)


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
    optional = {"documents": dict, "sources": list}  # absent before documents existed
    for name, types in optional.items():
        if name in header and not isinstance(header[name], types):
            raise UsageError(f"{header_path}: {name} is of the wrong type; {again}")


# The `documents` of a header written before documents existed: one, split at its tail.
SINGLE_DOCUMENT = {"count": 1, "boundary": "file", "glob": "", "end_token": None, "split": "tail"}


def check_documents(path, header, vocabulary, again):
    """The documents' offsets, (train, validation) memory maps, when the header says the corpus
    has several (None otherwise); UsageError unless the record, the vocabulary's end token and
    the offset files agree."""
    documents = header.get("documents")
    if documents is None or documents.get("split") != "documents":
        return None
    where = os.path.join(path, HEADER)
    counts = [documents.get(split) for split in ("count", "train", "val")]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts) or (
        counts[0] != counts[1] + counts[2] or min(counts[1:]) < 1
    ):
        raise UsageError(f"{where}: the documents' counts are missing or disagree; {again}")
    if documents.get("end_token") != END_OF_DOCUMENT or END_OF_DOCUMENT not in vocabulary:
        raise UsageError(
            f"{path}: its vocabulary lacks the end-of-document token {END_OF_DOCUMENT!r} that "
            f"{HEADER} names; {again}"
        )
    return tuple(
        map_ids(os.path.join(path, name), OFFSET_DTYPE.name, documents[split], again)
        for name, split in ((TRAIN_DOCUMENTS, "train"), (VAL_DOCUMENTS, "val"))
    )


def check_labels(path, header, again):
    """(label names, (train, validation) label ids of the documents) of a corpus prepared with
    --labels, None otherwise; UsageError unless labels.json and the label files agree."""
    documents = header.get("documents") or {}
    if not documents.get("labels"):
        return None
    from textgen.training.run_directory import read_json_file

    labels_path = os.path.join(path, LABELS)
    if not os.path.isfile(labels_path):
        raise UsageError(f"{path} has no {LABELS}; {again}")
    names = read_json_file(labels_path, fix=again)
    if (
        not isinstance(names, list)
        or not all(isinstance(name, str) for name in names)
        or len(names) != documents.get("label_count")
        or len(set(names)) != len(names)
    ):
        raise UsageError(
            f"{labels_path} is not the list of {documents.get('label_count')} "
            f"distinct label names that {HEADER} says; {again}"
        )
    arrays = tuple(
        map_ids(os.path.join(path, name), LABEL_DTYPE.name, documents[split], again)
        for name, split in ((TRAIN_LABELS, "train"), (VAL_LABELS, "val"))
    )
    if any(len(a) and int(np.max(a)) >= len(names) for a in arrays):
        raise UsageError(f"{path}: a document's label id is outside {LABELS}; {again}")
    return names, arrays


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


def check_unchanged_source(path, source, again, header=None):
    """UsageError if a file the directory was prepared from is there but holds other bytes
    (every file of the header's `sources`, or its one `source`), or if a folder it was prepared
    from now holds other files. Same size and mtime are taken as unchanged; otherwise the hash
    decides."""
    header = header or {}
    sources = header.get("sources")
    for record in sources if isinstance(sources, list) else [source]:
        if isinstance(record, dict):
            check_unchanged_file(path, record, again)
    documents = header.get("documents")
    if isinstance(documents, dict) and isinstance(sources, list):
        check_unchanged_folders(path, documents, sources, again)


def check_unchanged_file(path, source, again):
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


def check_unchanged_folders(path, documents, sources, again):
    """UsageError if a folder of `documents["data"]` that is still there lists other files
    (under the same `glob`) than it did: a file added or removed changes the corpus too."""
    known = {record.get("path") for record in sources if isinstance(record, dict)}
    for folder in documents.get("data") or []:
        if not isinstance(folder, str) or not os.path.isdir(folder):
            continue
        try:
            now = {os.path.abspath(f) for f in folder_files(folder, documents.get("glob") or "")}
        except UsageError:
            now = set()
        then = {name for name in known if name.startswith(os.path.join(folder, ""))}
        if now != then:
            added, removed = len(now - then), len(then - now)
            raise UsageError(
                f"{path} was prepared from the folder {folder}, which holds other files since "
                f"({added} added, {removed} gone); {again}"
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


def cached_corpus(source, options, progress=None, log=None, documents=None):
    """The PreparedCorpus of `source` (a file, a folder or a list of them) with `options` and
    the document flags `documents`, from the cache, prepared there first when it is not (or is
    damaged). Hashing the files costs about 1 s per GB. One file cut at `file` boundaries (one
    document) is keyed by its hash and the tokenisation flags, as it always was; anything else
    by the files' hashes in order, the tokenisation flags and the document flags."""
    documents = {**DOCUMENT_OPTIONS, **(documents or {})}
    files = source_files(source, documents["glob"], options["encoding"])
    options = resolve_segmenter(files, options)
    size = sum(os.path.getsize(path) for path in files)
    with progress_bar(size, "hashing the corpus", progress) as bar:
        hashes = [file_sha256(path, lambda raw: bar.update(len(raw))) for path in files]
    if len(files) == 1 and documents["document_boundary"] == "file" and not documents["labels"]:
        key = cache_key(hashes[0], options)
    elif documents["labels"] == "folder":  # the labels come from the paths, not the bytes
        labels = file_labels(source, documents["glob"])
        key = cache_key(files_sha256(hashes), {**options, **documents, "file_labels": labels})
    else:
        key = cache_key(files_sha256(hashes), {**options, **documents})
    entry = os.path.join(cache_root(), key)
    if os.path.isfile(os.path.join(entry, HEADER)):
        try:
            corpus = PreparedCorpus.open(entry, check_source=False)
            os.utime(os.path.join(entry, HEADER))  # the last use, which pruning goes by
            return corpus
        except UsageError:
            pass  # a damaged entry is prepared again
    os.makedirs(cache_root(), exist_ok=True)
    started = time.monotonic()
    corpus = prepare_files(files, source, entry, options, documents, progress)
    if log is not None:
        seconds = time.monotonic() - started
        what = "file" if len(files) == 1 else "files"
        log(
            f"prepared {describe_data(source)} ({size_text(size)}{documents_text(corpus)}) in "
            f"{seconds:.1f} s into {entry}; later runs on the same {what} and flags reuse it"
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


def documents_text(corpus):
    """', N documents (M held out)' for a corpus of several documents, else ''."""
    documents = corpus.documents
    if documents.get("split") != "documents":
        return ""
    labels = f", {documents['label_count'] - 1:,} labels" if documents.get("labels") else ""
    return (
        f", {documents['count']:,} documents ({documents['val']:,} held out for validation){labels}"
    )


def is_prepared_directory(data):
    """True when `data` is one directory that `textgen.prepare` wrote (it has a header.json),
    or one that looks like it lost its header (it holds train.bin or vocab.json): a folder of
    text files holds neither."""
    paths = data_paths(data)
    if len(paths) != 1 or not os.path.isdir(paths[0]):
        return False
    return any(os.path.isfile(os.path.join(paths[0], name)) for name in (HEADER, TRAIN, VOCABULARY))


def corpus_for_training(config, explicit=(), progress=None, log=None):
    """The PreparedCorpus that `textgen.train --data` names: a prepared directory, or text files
    (a file, a folder, several) prepared into the cache. With a directory, the config's
    tokenisation and document flags are set from its header (so config.json records them); a
    flag given that differs is a UsageError."""
    if not is_prepared_directory(config.data):
        corpus = cached_corpus(
            config.data, tokenisation(config), progress, log, document_options(config)
        )
        config.segmenter = corpus.tokenisation["segmenter"]  # auto resolved: reloads the same
        return corpus
    corpus = PreparedCorpus.open(config.data)
    documents = corpus.documents
    recorded = {
        "document_boundary": documents["boundary"],
        "glob": documents.get("glob", ""),
        "labels": documents.get("labels", ""),
        "document_order": documents.get("order", "corpus"),
    }
    for name, prepared in recorded.items():
        if name in explicit and getattr(config, name) != prepared:
            raise UsageError(
                f"`{name}` {getattr(config, name)!r} does not match {config.data}, prepared "
                f"with {prepared!r}; drop the flag, or prepare the corpus again with it"
            )
        setattr(config, name, prepared)
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
    corpus = prepare_corpus(
        config.data,
        out,
        tokenisation(config),
        progress,
        config.workers,
        document_options(config),
    )
    seconds = time.monotonic() - started
    header = corpus.header
    rate = header["source"]["size"] / 1e6 / max(seconds, 1e-9)
    print(
        f"prepared {describe_data(config.data)} ({size_text(header['source']['size'])}"
        f"{documents_text(corpus)}) in {seconds:.1f} s "
        f"({rate:.1f} MB/s): {header['vocabulary_size']:,} tokens in the vocabulary, "
        f"{header['train_tokens']:,} train / {header['val_tokens']:,} validation ids as "
        f"{header['dtype']} in {out}",
        file=sys.stdout,
    )
    return corpus
