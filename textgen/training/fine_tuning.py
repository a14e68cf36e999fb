"""Fine-tuning (`init_from`): a new run that starts from the weights of another one.

The source is a run directory, finished or interrupted, or the bundled model. `WeightSource`
reads it (its config, vocabulary and checkpoint, with the checkpoint file's SHA-256), hands its
architecture to the new run's config (`configure`, before the corpus is read, since the level and
segmenter decide how it is tokenised), merges its vocabulary with the corpus's (`merge`) and
puts its weights into the new run's freshly built model (`transfer`). The new run has its own
run directory, optimizer and schedule; on --resume it is an ordinary run (its vocab.json is the
merged vocabulary, its checkpoint holds every weight) and nothing here is read again.

The merged vocabulary is the source's tokens first, in the source's order, then the corpus's
tokens the source lacks, in the corpus's order. Rows move by the token itself: a token keeps the
embedding row and output column it had in the source whatever its id in the corpus, and the
corpus's ids are mapped to the merged ones batch by batch (`StreamBatches`' `remap`), so a
memory-mapped corpus is not read into memory. The source's tokens that the corpus lacks are
kept, so the model still knows them.
"""

import dataclasses
import hashlib
import math
import os

import numpy as np

from textgen import config as config_lib
from textgen import resources
from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError
from textgen.training.run_directory import (
    RunDirectory,
    SavedGroup,
    read_checkpoint,
    variable_keys,
)

# `init_from` bundled: the model textgen.sample uses without a RUN_DIR.
BUNDLED = "bundled"
BUNDLED_MODEL = "shakespeare"

# The source's checkpoint, the first of these it has: the best evaluation's (early stopping's
# checkpoint.best.npz) where the run kept one, else its latest.
SOURCE_CHECKPOINTS = (RunDirectory.BEST_CHECKPOINT, RunDirectory.CHECKPOINT)

# What a fine-tuned model takes over from its source (the segmenter at word level only).
ARCHITECTURE = ("cell", "num_layers", "hidden_size", "embedding_size", "level", "segmenter")

# The key of config.json that records where a fine-tuned run's weights came from.
RECORD = "init_from_checkpoint"


def source_directory(init_from):
    """The run directory `init_from` names: a path, or the bundled model's."""
    if init_from == BUNDLED:
        return str(resources.bundled_model(BUNDLED_MODEL))
    return init_from


def hashed_checkpoint(path, fix):
    """(groups, progress, SHA-256 of the file) of the checkpoint at `path`, all three of the same
    file: a source that is still training replaces its checkpoint by renaming a new file over it,
    so the one file opened here is hashed, and it is the one read if `path` still names it
    afterwards."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        inode = os.fstat(f.fileno()).st_ino
        groups, progress = read_checkpoint(path, fix)
    if os.stat(path).st_ino != inode:
        raise UsageError(
            f"{path} was replaced while it was read (its run is still training); try again"
        )
    return groups, progress, digest


def logsumexp(values):
    values = np.asarray(values, np.float64)
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))


@dataclasses.dataclass
class WeightSource:
    """The run a fine-tuning run starts from: its TrainConfig, Vocabulary, checkpoint file (path,
    SHA-256, global step) and the checkpoint's model arrays."""

    init_from: str  # as given: a path or "bundled"
    checkpoint_path: str
    sha256: str
    step: int
    config: config_lib.TrainConfig
    vocabulary: Vocabulary
    model_arrays: list
    counts: dict = dataclasses.field(default_factory=dict)  # kept/added/unused, from `merge`
    labels: list = None  # a conditioned source's label names

    @classmethod
    def open(cls, init_from):
        """Reads the source `init_from` names; a UsageError of one line if it is not a run with
        a good checkpoint. Reads files only (TensorFlow has not run yet)."""
        path = source_directory(init_from)
        if not os.path.isdir(path):
            raise UsageError(
                f"`init_from` {init_from} is not a directory; pass the `out` directory of a "
                f"training run, or {BUNDLED}"
            )
        run = RunDirectory(path)
        checkpoint = next(
            (run.file(name) for name in SOURCE_CHECKPOINTS if os.path.exists(run.file(name))),
            None,
        )
        if checkpoint is None:
            raise UsageError(
                f"`init_from` {init_from} holds no checkpoint ({RunDirectory.CHECKPOINT}); "
                "train it first or pass another run"
            )
        config = config_lib.from_dict(run.load_config(config_lib.TrainConfig))
        vocabulary = run.load_vocabulary()
        groups, progress, digest = hashed_checkpoint(checkpoint, "pass another run to `init_from`")
        labels = run.load_labels() if config.labels else None
        return cls(
            init_from,
            os.path.abspath(checkpoint),
            digest,
            progress["global_step"],
            config,
            vocabulary,
            groups.get("model", SavedGroup()),
            labels=labels,
        )

    def record(self):
        """Where the weights came from, for config.json."""
        return {"path": self.checkpoint_path, "sha256": self.sha256, "step": self.step}

    # ---- the new run's config ----
    def configure(self, config, explicit):
        """Gives `config` the source's architecture and fine-tuning's default learning rate
        (unless `learning_rate` is in `explicit`). UsageError, one line, for explicit flags that
        contradict the source."""
        source = self.config
        taken = [n for n in ARCHITECTURE if n != "segmenter" or source.level == "word"]
        if self.labels:  # a conditioned source: its label embedding and where it acts
            taken += ["label_embedding_size", "label_injection"]
            if not config.labels:
                raise UsageError(
                    f"`init_from` {self.init_from} is conditioned on labels; fine-tune it "
                    "with `labels` folder or jsonl"
                )
        conflicts = [
            name
            for name in taken
            if name in explicit
            and getattr(config, name) != getattr(source, name)
            and not (name == "segmenter" and config.segmenter == "auto")
        ]
        if conflicts:
            details = ", ".join(
                f"`{n}` {getattr(config, n)!r} (the source has {getattr(source, n)!r})"
                for n in conflicts
            )
            raise UsageError(
                f"`init_from` {self.init_from}: {details}; a fine-tuned model keeps its "
                "source's architecture: drop those flags"
            )
        for name in taken:
            setattr(config, name, getattr(source, name))
        if "learning_rate" not in explicit:
            config.learning_rate = config_lib.FINE_TUNE_LEARNING_RATE
        if config.min_learning_rate > config.learning_rate:
            raise UsageError(
                f"`min_learning_rate` {config.min_learning_rate} is above the `learning_rate` "
                f"of this fine-tuning run ({config.learning_rate}); lower it or pass a larger "
                "`learning_rate`"
            )
        if config.freeze_layers > config.num_layers:
            raise UsageError(
                f"`freeze_layers` {config.freeze_layers} is more than the {config.num_layers} "
                f"recurrent layers of `init_from` {self.init_from}"
            )

    def check_corpus(self, corpus, data):
        """A prepared directory fixes its own level and segmenter: they must be the source's."""
        names = ("level", "segmenter") if self.config.level == "word" else ("level",)
        for name in names:
            prepared, source = corpus.tokenisation[name], getattr(self.config, name)
            if prepared != source:
                raise UsageError(
                    f"`data` {data} was prepared with `{name}` {prepared!r}, but `init_from` "
                    f"{self.init_from} has {source!r}; prepare it again with `{name}` {source!r}"
                )

    # ---- the vocabulary ----
    def merge(self, corpus_vocabulary):
        """(the merged Vocabulary, the int32 table from the corpus's ids to its ids, or None
        when they are the same). Counts the tokens kept, added and unused (`summary`)."""
        source = self.vocabulary
        added = [t for t in corpus_vocabulary.tokens if t not in source]
        vocabulary = Vocabulary(
            source.tokens + added,
            unknown_token=source.unknown_token or corpus_vocabulary.unknown_token,
        )
        self.counts = {
            "kept": len(corpus_vocabulary) - len(added),
            "added": len(added),
            "unused": sum(t not in corpus_vocabulary for t in source.tokens),
        }
        if vocabulary == corpus_vocabulary:
            return vocabulary, None
        remap = np.array([vocabulary.id(t) for t in corpus_vocabulary.tokens], dtype=np.int32)
        return vocabulary, remap

    def merge_labels(self, corpus_labels):
        """(the run's label names, the int32 table from the corpus's label ids to the run's,
        or None when they are the same): a conditioned source's labels keep their ids, the
        corpus's new ones come after them."""
        if not self.labels:
            return list(corpus_labels), None
        labels = self.labels + [name for name in corpus_labels if name not in self.labels]
        if labels == list(corpus_labels):
            return labels, None
        return labels, np.array([labels.index(name) for name in corpus_labels], np.int32)

    def summary(self, data, vocabulary):
        """The log line of the start: where from, and the tokens kept, added and unused."""
        c = self.counts
        return (
            f"fine-tuning from {self.checkpoint_path} (global step {self.step}): vocabulary "
            f"{len(vocabulary)} tokens, {c['kept']} kept from the source, {c['added']} added, "
            f"{c['unused']} unused (the source's, not in {data}; kept)"
        )

    # ---- the weights ----
    def source_arrays(self, model):
        """{variable key: array} of the source's model, keyed as `variable_keys` keys `model`'s
        variables (a checkpoint that stored them by position: in `model`'s order, which is the
        source's, the architecture being the same)."""
        group = self.model_arrays
        if isinstance(group, SavedGroup) and group and not group.positional:
            return dict(zip(group.names, group))
        keys = variable_keys(model.variables)
        if len(group) != len(keys):
            raise UsageError(
                f"`init_from` {self.init_from}: {self.checkpoint_path} holds {len(group)} model "
                f"variables where a {self.config.cell} language model of its config has "
                f"{len(keys)}; it is not a textgen language model's checkpoint"
            )
        return dict(zip(keys, group))

    def transfer(self, model, vocabulary, counts):
        """Assigns the source's weights to `model`, a freshly built model of the merged
        `vocabulary` and the source's architecture. The recurrent layers' weights are copied;
        a token the source knows gets its embedding row, output kernel column and output bias
        back, at its merged id; a new token keeps the fresh model's random embedding row and
        output column, and its output bias is set from its count in the corpus's training
        tokens (`counts`, by merged id; `token_counts`), as below. The dropout generators keep
        this run's own seed."""
        arrays = self.source_arrays(model)
        keys = {v.path: k for v, k in zip(model.variables, variable_keys(model.variables))}

        def source(variable, shape):
            key = keys[variable.path]
            if key not in arrays:
                raise UsageError(
                    f"`init_from` {self.init_from}: {self.checkpoint_path} lacks {key!r}; it is "
                    "not a textgen language model's checkpoint"
                )
            array = arrays[key]
            if tuple(array.shape) != tuple(shape):
                raise UsageError(
                    f"`init_from` {self.init_from}: {key} in {self.checkpoint_path} has shape "
                    f"{tuple(array.shape)} where its config and vocabulary give {tuple(shape)}; "
                    "the run directory is damaged"
                )
            return array

        n = len(self.vocabulary)
        rows = np.array([vocabulary.id(t) for t in self.vocabulary.tokens], dtype=np.int64)
        embedding = model.embedding.embeddings
        value = embedding.numpy()
        value[rows] = source(embedding, (n, value.shape[1]))
        embedding.assign(value)
        for index, layer in enumerate(model.recurrent_stack.recurrent_layers):
            for weight in layer.weights:
                if index == 0 and weight is layer.cell.kernel and model.labels:
                    self.transfer_first_kernel(model, weight, arrays[keys[weight.path]])
                else:
                    weight.assign(source(weight, weight.shape))
        if model.labels and self.labels:
            label_embedding = model.label_embedding.embeddings
            value = label_embedding.numpy()
            value[: len(self.labels)] = source(label_embedding, (len(self.labels), value.shape[1]))
            label_embedding.assign(value)
        kernel, bias = model.output_layer.kernel, model.output_layer.bias
        value = kernel.numpy()
        value[:, rows] = source(kernel, (value.shape[0], n))
        kernel.assign(value)
        source_bias = source(bias, (n,))
        # A new token's output bias: the log of its count in the corpus's training tokens, on
        # the scale of the source's biases: less their log-sum-exp, the biases alone give it
        # its frequency in the corpus, count/total (at least 1/total: a token seen only in the
        # validation text counts once). So the new tokens together start with about their
        # share of the text, a rare new word with next to nothing, and a thousand new words do
        # not take a large share of every prediction, as at zero, a fresh model's bias, where
        # each starts level with the source's tokens (a trained model's biases are near zero:
        # its frequencies live in the output columns). Fine-tuning the bundled model on 480 kB
        # of fortunes (digits and brackets are common there and new to it), 200 steps at 1e-3,
        # gave 1.952 nats/char with these biases, 1.950 with zeros and 2.124 with log(1/total)
        # for every new token: Adam moves a bias by about the learning rate a step, so one that
        # starts far too low stays too low for thousands of steps.
        total = max(float(counts.sum()), 1.0)
        value = (logsumexp(source_bias) + np.log(np.maximum(counts, 1) / total)).astype(np.float32)
        value[rows] = source_bias
        bias.assign(value)

    def transfer_first_kernel(self, model, kernel, array):
        """A conditioned model's first kernel: Wxh from the source; Wih the source's when it
        is conditioned too, else zero, so that the new model computes exactly the source's
        function until Wih learns. The label embedding keeps its random start: were it zero
        too, neither it nor Wih would get a gradient (each one's is the other times the
        error)."""
        rows = model.embedding_size
        expected = (rows + (model.label_embedding_size if self.labels else 0), kernel.shape[1])
        if tuple(array.shape) != expected:
            raise UsageError(
                f"`init_from` {self.init_from}: its first recurrent kernel in "
                f"{self.checkpoint_path} has shape {tuple(array.shape)} where its config "
                f"gives {expected}; the run directory is damaged"
            )
        value = np.zeros(kernel.shape, np.float32)
        value[: array.shape[0]] = array
        kernel.assign(value)


def token_counts(ids, remap, size, chunk=1 << 24):
    """How often each of `size` run ids occurs in `ids` (a memory map of corpus ids, read in
    chunks), through `remap` (corpus id -> run id, or None)."""
    counts = np.zeros(size, np.int64)
    for start in range(0, len(ids), chunk):
        chunk_counts = np.bincount(ids[start : start + chunk])
        runs = np.arange(len(chunk_counts)) if remap is None else remap[: len(chunk_counts)]
        np.add.at(counts, runs, chunk_counts)
    return counts


def freeze(model, config):
    """`freeze_embedding` and `freeze_layers` K: the embedding and the first K recurrent layers
    are not trainable, so neither the gradient step nor the optimizer's slots touch them. Applied
    before the optimizer is built, on --resume too (the config keeps both)."""
    if config.freeze_embedding:
        model.embedding.trainable = False
    for layer in model.recurrent_stack.recurrent_layers[: config.freeze_layers]:
        layer.trainable = False
