"""RunDirectory: config.json, vocab.json and checkpoint.npz of one training run.

A checkpoint is a single `.npz` of plain arrays (model variables, optimizer variables, recurrent
states) plus the progress as JSON (`textgen.training.progress`: epoch, step, the epoch's loss so
far, RNG state) and a SHA-256 checksum of all of them; the loss history is in RUN/metrics.jsonl. It
is read with `allow_pickle=False`, so a checkpoint received from someone else cannot run code, and
the checksum is verified, so a flipped bit is an error, not a silently wrong model. It is written
to a temporary file and renamed, so a crash, a kill or a full disk leaves the previous checkpoint
intact; the one it replaces is kept as checkpoint.prev.npz, for when the latest is damaged anyway.
The training process holds an flock on RUN/lock, so that a second one cannot write the same
directory.
"""

import collections
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import shutil
import socket
import zipfile
import zlib

import numpy as np

from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError
from textgen.io import atomic_write, atomic_write_text


def _json_array(value):
    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def _from_json_array(array):
    return json.loads(array.tobytes().decode("utf-8"))


# What a user can do about a damaged run-directory file.
DAMAGED_RUN = "the run directory is damaged: restore it from a copy or train again"

# JSON types by the names a message uses.
JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def read_json_file(path, fix=DAMAGED_RUN):
    """The JSON value in `path`. A missing file raises FileNotFoundError (callers say what it
    means); any other problem, a directory, unreadable bytes, not UTF-8, empty, not JSON, a
    UsageError of one line naming the file, the problem and `fix`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a file; {fix}") from None
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UsageError(f"{path} cannot be read ({error.strerror or error}); {fix}") from None
    if not data.strip():
        raise UsageError(f"{path} is empty; {fix}")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path} is not UTF-8 text (byte {error.start} is "
            f"{data[error.start]:#04x}), so not JSON; {fix}"
        ) from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise UsageError(f"{path} is not valid JSON ({error}); {fix}") from None


def check_field_types(values, schema, path, fix=DAMAGED_RUN):
    """UsageError unless every field of the dataclass `schema` in `values` has the type of the
    field's default (an int is a valid float). Fields `values` lacks are left to the defaults,
    as for runs saved before a field existed."""
    import dataclasses

    for field in dataclasses.fields(schema):
        if field.name not in values or field.default is dataclasses.MISSING:
            continue
        expected, value = type(field.default), values[field.name]
        # JSON gives exact types (true is no integer here); 2 is as good a float as 2.0.
        allowed = (float, int) if expected is float else (expected,)
        if expected is not type(None) and type(value) not in allowed:
            shown = json.dumps(value, ensure_ascii=False)
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            raise UsageError(
                f"{path}: {field.name} is {shown}, {JSON_TYPES[type(value)]} where "
                f"{JSON_TYPES[expected]} belongs; {fix}"
            )


class RunDirectory:
    CONFIG = "config.json"
    VOCABULARY = "vocab.json"
    LABELS = "labels.json"
    # How many training documents each label has: the prior of `textgen.score --classify`.
    LABEL_COUNTS = "label_counts.json"
    CHECKPOINT = "checkpoint.npz"
    PREVIOUS_CHECKPOINT = "checkpoint.prev.npz"  # the one before, kept when a new one is written
    # The weights of the best evaluation so far (lowest validation loss), for sampling, scoring
    # and export; training resumes from the latest.
    BEST_CHECKPOINT = "checkpoint.best.npz"
    LOCK = "lock"  # flock'ed by the training process that writes the directory

    def __init__(self, path):
        self.path = os.fspath(path)
        # Whether checkpoint.npz was read and found good, or written, by this object. A new
        # checkpoint moves it to checkpoint.prev.npz only then: after --resume-from previous the
        # previous one is the last good one and stays.
        self.latest_is_good = True

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def config_path(self):
        return self.file(self.CONFIG)

    @property
    def vocabulary_path(self):
        return self.file(self.VOCABULARY)

    @property
    def checkpoint_path(self):
        return self.file(self.CHECKPOINT)

    def holds_run(self):
        return any(os.path.exists(self.file(n)) for n in (self.CONFIG, self.CHECKPOINT))

    def has_checkpoint(self):
        # exists, not isfile: a directory in its place is a damaged checkpoint, which loading
        # reports as such, not a run that was never trained
        return os.path.exists(self.checkpoint_path)

    def require_checkpoint(self):
        if not os.path.isdir(self.path):
            raise UsageError(
                f"run directory {self.path} does not exist; pass the `out` directory "
                "of a training run"
            )
        if not self.has_checkpoint():
            raise UsageError(
                f"{self.path} holds no checkpoint ({self.CHECKPOINT}); train first "
                f"with `python -m textgen.train --out {self.path}`"
            )

    def create(self):
        os.makedirs(self.path, exist_ok=True)

    def save_config(self, config):
        atomic_write_text(self.config_path, json.dumps(config, indent=2, ensure_ascii=False))

    def load_config(self, schema=None):
        """The run's settings (a dict). `schema`, the config dataclass, checks the type of every
        field the file has; a damaged file is a UsageError naming it."""
        try:
            values = read_json_file(self.config_path)
        except FileNotFoundError:
            raise UsageError(f"{self.path} has no {self.CONFIG}; is it a run directory?") from None
        if not isinstance(values, dict):
            raise UsageError(
                f"{self.config_path} holds {JSON_TYPES[type(values)]}, not an object "
                f"of settings; {DAMAGED_RUN}"
            )
        if schema is not None:
            check_field_types(values, schema, self.config_path)
        return values

    def save_vocabulary(self, vocabulary):
        vocabulary.save(self.vocabulary_path)

    def load_vocabulary(self):
        try:
            values = read_json_file(self.vocabulary_path)
        except FileNotFoundError:
            raise UsageError(
                f"{self.path} has no {self.VOCABULARY}; is it a run directory?"
            ) from None
        try:
            return Vocabulary.from_config(values)
        except ValueError as error:  # not a vocabulary; Vocabulary.from_config says why
            raise UsageError(
                f"{self.vocabulary_path} is not a valid vocabulary ({error}); {DAMAGED_RUN}"
            ) from None

    def save_labels(self, labels):
        """labels.json: a conditioned model's label names, <none> first."""
        atomic_write_text(self.file(self.LABELS), json.dumps(list(labels), ensure_ascii=False))

    def save_label_counts(self, labels, counts):
        """label_counts.json: {"training_documents": {name: count}} for every label but <none>,
        the label frequencies a generative classifier takes as its prior."""
        counts = {name: int(count) for name, count in zip(labels[1:], counts[1:])}
        atomic_write_text(
            self.file(self.LABEL_COUNTS), json.dumps({"training_documents": counts}, indent=1)
        )

    def load_label_counts(self, labels):
        """The training documents of each label but <none> (a list in `labels` order), or None
        for a run trained before label_counts.json was written (its classifier's prior is then
        uniform). A damaged file, or one that does not name exactly these labels, is a
        UsageError naming it."""
        path = self.file(self.LABEL_COUNTS)
        try:
            values = read_json_file(path)
        except FileNotFoundError:
            return None
        counts = values.get("training_documents") if isinstance(values, dict) else None
        if (
            not isinstance(counts, dict)
            or set(counts) != set(labels[1:])
            or not all(isinstance(c, int) and c >= 0 for c in counts.values())
        ):
            raise UsageError(
                f"{path} does not hold the training documents of each of the run's labels "
                f'({{"training_documents": {{"NAME": COUNT, ...}}}}); {DAMAGED_RUN}'
            )
        return [counts[name] for name in labels[1:]]

    def load_labels(self):
        path = self.file(self.LABELS)
        try:
            labels = read_json_file(path)
        except FileNotFoundError:
            raise UsageError(
                f"{self.path} has no {self.LABELS}, and its config.json says the model is "
                f"conditioned on labels; {DAMAGED_RUN}"
            ) from None
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(name, str) for name in labels)
            or len(set(labels)) != len(labels)
        ):
            raise UsageError(f"{path} is not a list of distinct label names; {DAMAGED_RUN}")
        return labels

    def resumed_config(self, requested, explicit, from_dict, run_identity):
        """The config to --resume with: the run's own config.json, with the flags the user gave
        (`explicit`) taken from `requested`. UsageError if there is no checkpoint, or if a given
        flag in `run_identity` (fields that fix the model and the data) differs from the run's."""
        if not os.path.isdir(self.path) or not self.has_checkpoint():
            raise UsageError(
                f"`resume`: {self.path} holds no checkpoint to resume from; train "
                "without `resume` first"
            )
        saved = from_dict(self.load_config(type(requested)))
        changed = [
            name
            for name in run_identity
            if name in explicit and getattr(requested, name) != getattr(saved, name)
        ]
        if changed:
            details = ", ".join(
                f"`{n}` {getattr(requested, n)!r} (run has {getattr(saved, n)!r})" for n in changed
            )
            raise UsageError(
                f"`resume`: the config does not match the run in {self.path}: {details}; "
                "drop those flags or choose another `out`"
            )
        for name in explicit:
            setattr(saved, name, getattr(requested, name))
        saved.resume = True
        return saved

    # ---- checkpoints ----
    def previous_checkpoint_path(self):
        return self.file(self.PREVIOUS_CHECKPOINT)

    def best_checkpoint_path(self):
        return self.file(self.BEST_CHECKPOINT)

    def has_best_checkpoint(self):
        return os.path.lexists(self.best_checkpoint_path())  # a directory there is damage too

    def save_checkpoint(self, groups, progress, roots=()):
        """groups: {"model": variables, "optimizer": variables, "states": [arrays], ...}.
        Keras variables are stored under their path (`variable_keys`, relative to the `roots`,
        the model's and optimizers' names), so that loading matches them by name and not by
        position; plain arrays by position.

        The checkpoint it replaces becomes checkpoint.prev.npz (a hard link, so checkpoint.npz
        is there, old or new, at every instant), unless that one was found damaged: the previous
        checkpoint is then the last good one and is kept."""
        data = checkpoint_bytes(groups, progress, roots)
        if self.latest_is_good and os.path.isfile(self.checkpoint_path):
            self._keep_as_previous()
        atomic_write(
            self.checkpoint_path,
            data,
            intact=f"the last checkpoint, {self.checkpoint_path}, is intact",
        )
        self.latest_is_good = True

    def save_best_checkpoint(self, groups, progress, roots=()):
        """checkpoint.best.npz: the same format and checksum as the others, replaced atomically
        (a crash leaves the previous best)."""
        atomic_write(
            self.best_checkpoint_path(),
            checkpoint_bytes(groups, progress, roots),
            intact=f"the previous best checkpoint, {self.best_checkpoint_path()}, is intact",
        )

    def _keep_as_previous(self):
        link = self.file(f".{self.PREVIOUS_CHECKPOINT}.tmp")
        if os.path.lexists(link):
            os.unlink(link)
        try:
            os.link(self.checkpoint_path, link)
        except OSError:  # a file system without hard links: a copy costs a write, nothing else
            shutil.copyfile(self.checkpoint_path, link)
        os.replace(link, self.previous_checkpoint_path())

    def load_checkpoint(self, which="latest"):
        """Returns (groups, progress), the inverse of `save_checkpoint`. `which` is "latest",
        "previous" or "best" (checkpoint.best.npz when there is one, else the latest). A
        damaged checkpoint is a UsageError that says whether the previous one is good, and how
        to resume from it; nothing falls back to it silently."""
        self.require_checkpoint()
        if which == "best" and self.has_best_checkpoint():
            return read_checkpoint(
                self.best_checkpoint_path(), "pass `weights` latest to use the latest checkpoint"
            )
        if which == "previous":
            path = self.previous_checkpoint_path()
            if not os.path.exists(path):
                raise UsageError(
                    f"`resume_from` previous: {self.path} has no previous checkpoint "
                    f"({self.PREVIOUS_CHECKPOINT}); resume from the latest one"
                )
            groups, progress = read_checkpoint(
                path, "restore the run directory from a copy or train again"
            )
            self.latest_is_good = False  # the latest is the damaged one: keep the previous one
            return groups, progress
        try:
            groups, progress = read_checkpoint(self.checkpoint_path, None)
        except UsageError as error:
            raise UsageError(f"{error}; {self._previous_advice()}") from None
        self.latest_is_good = True
        return groups, progress

    def _previous_advice(self):
        path = self.previous_checkpoint_path()
        try:
            _, progress = read_checkpoint(path, None)
        except UsageError:
            if os.path.exists(path):
                return "the previous checkpoint is damaged too: train again"
            return "there is no previous checkpoint: train again"
        return (
            f"the previous checkpoint (global step {progress.get('global_step')}) is intact: "
            "continue from it with --resume --resume-from previous"
        )

    # ---- one writer at a time ----
    def require_new(self):
        if self.holds_run():
            raise UsageError(
                f"{self.path} already holds a run; pass `resume` to continue it or "
                "choose another `out` directory"
            )

    def claim_new(self):
        """Creates the directory of a new run and takes its lock. UsageError if another process
        holds the lock, or created a run there since `require_new` was checked."""
        self.lock()
        try:
            self.require_new()
        except UsageError:
            self.unlock()
            raise

    def lock(self):
        """Takes the run directory's lock for this process, or raises UsageError naming the
        process that holds it. An OS lock (flock): the kernel releases it when the process ends,
        even by SIGKILL, so a dead run never leaves the directory locked."""
        self.create()
        path = self.file(self.LOCK)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UsageError(
                f"{self.path} is being written by a training process that is still "
                f"running ({holder}); wait for it to end, stop it, or choose "
                "another `out`"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock_handle = handle

    def unlock(self):
        handle, self._lock_handle = getattr(self, "_lock_handle", None), None
        if handle is not None:
            handle.close()  # closing releases the flock


def releases_lock(method):
    """Decorates a trainer's `train()`: the lock its `prepare()` took on `self.run` is released
    however training ends."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self.run.unlock()

    return wrapper


CHECKSUM = "checksum"


def checkpoint_bytes(groups, progress, roots=()):
    """The .npz bytes of a checkpoint (`RunDirectory.save_checkpoint`), its checksum included."""
    arrays = {"progress": _json_array(progress)}
    for group, values in groups.items():
        values = list(values)
        named = bool(values) and all(hasattr(v, "path") for v in values)
        keys = variable_keys(values, roots) if named else [f"{i:04d}" for i in range(len(values))]
        for key, value in zip(keys, values):
            arrays[f"{group}/{key}"] = np.asarray(value)
    arrays[CHECKSUM] = np.frombuffer(checksum(arrays).encode("ascii"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def checksum(arrays):
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == CHECKSUM:
            continue
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def read_checkpoint(path, fix):
    """(groups, progress) of one checkpoint file, its checksum verified. Checkpoints written
    before checksums existed (the bundled captioner) load unverified. UsageError, naming the
    file, for anything damaged; `fix` (None: none) is appended to the message."""
    suffix = f"; {fix}" if fix else ""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory, not a checkpoint file{suffix}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise UsageError(
            f"{path} cannot be read ({type(error).__name__}: {error}); the "
            f"checkpoint is damaged{suffix}"
        ) from None
    if CHECKSUM in arrays:
        stored = arrays[CHECKSUM].tobytes().decode("ascii", "replace")
        if stored != checksum(arrays):
            raise UsageError(
                f"{path} fails its checksum: its contents changed after it was "
                f"written, so the checkpoint is damaged{suffix}"
            )
    try:
        progress = _from_json_array(arrays["progress"])
        if not isinstance(progress, dict) or not isinstance(progress.get("global_step"), int):
            raise ValueError("no global step")
    except (KeyError, ValueError, UnicodeDecodeError) as error:
        raise UsageError(
            f"{path} holds no valid progress record ({error}); the checkpoint is damaged{suffix}"
        ) from None
    groups = {}
    for key in sorted(k for k in arrays if "/" in k):
        group, name = key.split("/", 1)
        groups.setdefault(group, SavedGroup()).add(name, arrays[key])
    return groups, progress


class SavedGroup(list):
    """A checkpoint group's arrays, in key order, with their keys in `names`: variable keys
    (`variable_keys`), or "0000", "0001", ... for arrays stored by position (all groups of
    checkpoints written before variables were stored by name)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def add(self, name, array):
        self.names.append(name)
        self.append(array)

    @property
    def positional(self):
        return all(name.isdigit() for name in self.names)


def variable_keys(variables, roots=()):
    """Names for Keras variables that are the same in every process. A path starts with its
    model's or optimizer's name, which Keras numbers per process (captioner_1, adam_2): the
    number is dropped. An optimizer's slot names embed the model's name: pass the model's name
    in `roots` to drop its number there too. Names that are still repeated (the seed generators'
    states, all named seed_generator_N/seed_generator_state) get their ordinal appended."""

    def unnumbered(name):
        return re.sub(r"_\d+$", "", name)

    keys = []
    for variable in variables:
        first, _, rest = variable.path.partition("/")
        for root in roots:
            if rest.startswith(root + "_"):
                rest = unnumbered(root) + rest[len(root) :]
                break
        keys.append(f"{unnumbered(first)}/{rest}" if rest else unnumbered(first))
    counts, unique = collections.Counter(keys), []
    for i, key in enumerate(keys):
        unique.append(f"{key}#{keys[:i].count(key)}" if counts[key] > 1 else key)
    return unique


def assign_variables(variables, arrays, what, roots=()):
    """Assigns saved arrays to variables, after checking that they match one for one: by key
    (`variable_keys`) when the checkpoint stored them by name, else by position."""
    variables = list(variables)
    if isinstance(arrays, SavedGroup) and arrays and not arrays.positional:
        saved = dict(zip(arrays.names, arrays))
        keys = variable_keys(variables, roots)
        missing = [k for k in keys if k not in saved]
        unknown = [k for k in saved if k not in set(keys)]
        if missing or unknown:
            detail = f"it lacks {missing[0]!r}" if missing else f"the model has no {unknown[0]!r}"
            raise UsageError(
                f"the checkpoint's {what} variables do not match the model's ({detail});"
                " the checkpoint belongs to a different configuration"
            )
        arrays = [saved[k] for k in keys]
    if len(variables) != len(arrays):
        raise UsageError(
            f"the checkpoint holds {len(arrays)} {what} variables but the model has "
            f"{len(variables)}; the checkpoint belongs to a different configuration"
        )
    for variable, array in zip(variables, arrays):
        if tuple(variable.shape) != tuple(array.shape):
            raise UsageError(
                f"checkpoint {what} variable {variable.path} has shape {array.shape}, "
                f"the model expects {tuple(variable.shape)}; the checkpoint belongs "
                "to a different configuration"
            )
        variable.assign(array)
