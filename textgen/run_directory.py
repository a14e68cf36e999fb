"""RunDirectory: config.json, vocab.json and checkpoint.npz of one training run.

A checkpoint is a single `.npz` of plain arrays (model variables, optimizer variables, recurrent
states) plus the progress as JSON (epoch, step, RNG state, loss history). It is read with
`allow_pickle=False`, so a checkpoint received from someone else cannot run code. It is written
to a temporary file and renamed, so a crash, a kill or a full disk leaves the previous checkpoint
intact.
"""

import io
import json
import os

import numpy as np

from textgen.errors import UsageError
from textgen.io import atomic_write, atomic_write_text
from textgen.vocabulary import Vocabulary


def _json_array(value):
    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def _from_json_array(array):
    return json.loads(array.tobytes().decode("utf-8"))


class RunDirectory:
    CONFIG = "config.json"
    VOCABULARY = "vocab.json"
    CHECKPOINT = "checkpoint.npz"

    def __init__(self, path):
        self.path = os.fspath(path)

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
        return os.path.isfile(self.checkpoint_path)

    def require_checkpoint(self):
        if not os.path.isdir(self.path):
            raise UsageError(f"run directory {self.path} does not exist; pass the --out directory "
                             "of a training run")
        if not self.has_checkpoint():
            raise UsageError(f"{self.path} holds no checkpoint ({self.CHECKPOINT}); train first "
                             f"with `python -m textgen.train --out {self.path}`")

    def create(self):
        os.makedirs(self.path, exist_ok=True)

    def save_config(self, config):
        atomic_write_text(self.config_path, json.dumps(config, indent=2, ensure_ascii=False))

    def load_config(self):
        try:
            with open(self.config_path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise UsageError(f"{self.path} has no {self.CONFIG}; is it a run directory?") from None
        except json.JSONDecodeError as error:
            raise UsageError(f"{self.config_path} is not valid JSON ({error}); "
                             "the run directory is damaged") from None

    def save_vocabulary(self, vocabulary):
        vocabulary.save(self.vocabulary_path)

    def load_vocabulary(self):
        try:
            return Vocabulary.load(self.vocabulary_path)
        except FileNotFoundError:
            raise UsageError(f"{self.path} has no {self.VOCABULARY}; is it a run directory?") from None

    def resumed_config(self, requested, explicit, from_dict, run_identity):
        """The config to --resume with: the run's own config.json, with the flags the user gave
        (`explicit`) taken from `requested`. UsageError if there is no checkpoint, or if a given
        flag in `run_identity` (fields that fix the model and the data) differs from the run's."""
        if not os.path.isdir(self.path) or not self.has_checkpoint():
            raise UsageError(f"--resume: {self.path} holds no checkpoint to resume from; train "
                             "without --resume first")
        saved = from_dict(self.load_config())
        changed = [name for name in run_identity
                   if name in explicit and getattr(requested, name) != getattr(saved, name)]
        if changed:
            details = ", ".join(f"--{n.replace('_', '-')} {getattr(requested, n)!r} (run has "
                                f"{getattr(saved, n)!r})" for n in changed)
            raise UsageError(f"--resume: the config does not match the run in {self.path}: {details}; "
                             "drop those flags or choose another --out")
        for name in explicit:
            setattr(saved, name, getattr(requested, name))
        saved.resume = True
        return saved

    def save_checkpoint(self, groups, progress):
        """groups: {"model": [arrays], "optimizer": [arrays], "states": [arrays], ...}."""
        arrays = {"progress": _json_array(progress)}
        for group, values in groups.items():
            for i, value in enumerate(values):
                arrays[f"{group}/{i:04d}"] = np.asarray(value)

        def write(f):
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            f.write(buffer.getvalue())

        atomic_write(self.checkpoint_path, write)

    def load_checkpoint(self):
        """Returns (groups, progress), the inverse of `save_checkpoint`."""
        self.require_checkpoint()
        try:
            with np.load(self.checkpoint_path, allow_pickle=False) as data:
                groups = {}
                for key in sorted(k for k in data.files if "/" in k):
                    group = key.split("/")[0]
                    groups.setdefault(group, []).append(data[key])
                progress = _from_json_array(data["progress"])
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"{self.checkpoint_path} cannot be read ({error}); "
                             "the checkpoint is damaged") from None
        return groups, progress


def assign_variables(variables, arrays, what):
    """Assigns saved arrays to variables, after checking that they match one for one."""
    if len(variables) != len(arrays):
        raise UsageError(f"the checkpoint holds {len(arrays)} {what} variables but the model has "
                         f"{len(variables)}; the checkpoint belongs to a different configuration")
    for variable, array in zip(variables, arrays):
        if tuple(variable.shape) != tuple(array.shape):
            raise UsageError(f"checkpoint {what} variable {variable.path} has shape {array.shape}, "
                             f"the model expects {tuple(variable.shape)}; the checkpoint belongs "
                             "to a different configuration")
        variable.assign(array)
