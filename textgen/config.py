"""Training configuration: plain typed values with defaults, each with its --help text.

The defaults are the ones that gave the best tiny-shakespeare validation loss in a 10-minute
budget on a 2-core CPU (bench/README.md, Quality). The learning rate's default, the cosine over
the planned run, was measured against char-rnn's per-epoch decay there too.
"""

import dataclasses

from textgen import resources
from textgen.errors import UsageError

DEFAULT_DATA = str(resources.default_corpus())


# The smallest auto cap of one validation pass (--val-max-tokens 0): small corpora, such as
# tiny-shakespeare's 111,539 validation characters, keep their full pass.
VAL_MAX_TOKENS_FLOOR = 2**18

# --learning-rate's default with --init-from (TrainConfig.learning_rate's help says why).
FINE_TUNE_LEARNING_RATE = 2e-3


def loop_field(name):
    """The dataclass field of a flag that TrainingLoop reads the same way for every model: its
    default and its --help text, written once for textgen.train and captioning.train."""
    default, help_text = LOOP_FIELDS[name]
    return dataclasses.field(default=default, metadata={"help": help_text})


# name: (default, --help text)
LOOP_FIELDS = {
    "max_minutes": (
        0.0,
        "stop cleanly, after saving a checkpoint, once the run has taken this many "
        "minutes (0: no limit)",
    ),
    "max_steps": (
        0,
        "stop after this many training steps in all, counting resumed ones (0: no limit)",
    ),
    "lr_schedule": (
        "cosine",
        "constant, or cosine: the learning rate falls from --learning-rate to "
        "--min-learning-rate along a half cosine over the run, whose end is the first "
        "of --epochs, --max-steps and --max-minutes (with --max-minutes it follows the "
        "clock, so runs with the same seed differ slightly)",
    ),
    "min_learning_rate": (1e-4, "where --lr-schedule cosine ends, in [0, --learning-rate]"),
    "lr_decay": (
        1.0,
        "also multiply the learning rate by this at every epoch after "
        "--lr-decay-after, in (0, 1] (char-rnn's schedule; 1: off)",
    ),
    "grad_clip": (5.0, "clip the gradients' global norm to this (0: off)"),
    "seed": (0, "random seed: the same seed and data give the same losses"),
    "resume": (False, "continue the run in --out from its last checkpoint"),
    "resume_from": (
        "latest",
        "with --resume: latest (checkpoint.npz), or previous (checkpoint.prev.npz, the "
        "one before it, kept for when the latest is damaged)",
    ),
    "checkpoint_every": (
        500,
        "write a checkpoint every N steps (one is always written at each epoch end and at the end)",
    ),
    "fused": (
        "auto",
        "auto, on or off. auto, on a CPU with one replica: time a few training steps of "
        "each recurrent kernel (textgen's C++ LSTM ops, the lean kernel on TensorFlow "
        "ops, the stock Keras layers) and train on the fastest; the choice is cached per "
        "machine and shape, so later runs measure nothing (with a GPU: the stock layers, "
        "cuDNN; under several replicas: the lean kernels). on: the lean kernels, the LSTM "
        "on the C++ ops where they build. off: the stock Keras layers",
    ),
    "precision": (
        "auto",
        "auto, float32 or bfloat16: the matmuls of the lean recurrent kernels and the output "
        "layer (weights, states, gates, softmax, loss and optimizer stay float32, and so do "
        "checkpoints: a run resumes under either). auto: float32 for now (bfloat16 trains "
        "1.4-1.6x faster where the CPU has the instructions, but the default model overfits the "
        "extra steps: docs/setup.md). bfloat16: the kernel measurement times the bfloat16 "
        "kernels (needs --fused auto or on; emulated, so slower than float32, on a CPU without "
        "AVX512_BF16, AMX or Arm BF16), for larger models that use the speed",
    ),
    "cell": ("lstm", "recurrent cell: lstm, gru or rnn (tanh)"),
}


def weights_field():
    """--weights of the CLIs that load a trained run (sample, score, export)."""
    return dataclasses.field(
        default="best",
        metadata={
            "choices": ("best", "latest"),
            "help": "best: the weights of the run's best evaluation (RUN/checkpoint.best.npz, "
            "lowest validation loss), when it has one; latest: its latest checkpoint",
        },
    )


def generation_precision_field():
    """--precision of the CLIs that generate (sample, export)."""
    return dataclasses.field(
        default="auto",
        metadata={
            "choices": ("auto", "float32", "bfloat16"),
            "help": "the matmuls of the graph generation loop, the one many streams take "
            "(textgen.generation.loop_choice; the XLA loop of few streams is float32: XLA "
            "has no fast bfloat16 product on the CPU). auto: bfloat16 where the CPU has "
            "bfloat16 instructions. An exported SavedModel records it and runs float32 on a "
            "CPU without them",
        },
    )


@dataclasses.dataclass
class TrainConfig:
    data: str = dataclasses.field(
        default=DEFAULT_DATA,
        metadata={
            "help": "the corpus: a text file, a folder of text files (searched recursively, in "
            "sorted order; each file is a document), several of those, or a directory written "
            "by python -m textgen.prepare; text is prepared on the fly into a cache keyed by "
            "the files' SHA-256 and the tokenisation flags",
            "default_help": "the embedded data/tinyshakespeare/input.txt",
            "metavar": "PATH",
            "nargs": "+",
        },
    )
    glob: str = dataclasses.field(
        default="",
        metadata={
            "help": "with a folder in --data: only the files whose name (or path inside the "
            "folder) matches this shell pattern, such as '*.txt'; hidden files are always "
            "left out",
            "default_help": "every file",
            "metavar": "PATTERN",
        },
    )
    document_boundary: str = dataclasses.field(
        default="file",
        metadata={
            "help": "where a document ends: file (each file is one, so a single file is one "
            "document), line (every line), paragraph (a blank line) or separator:TEXT (a line "
            "that is TEXT, such as separator:%% for fortune files). With more than one "
            "document, each ends with an end-of-document token that the model learns, and "
            "--val-fraction holds out whole documents",
            "metavar": "RULE",
        },
    )
    labels: str = dataclasses.field(
        default="",
        metadata={
            "help": "condition the model on a label per document: folder (the name of the "
            "top folder a file is in under a --data folder, or the file's own name without "
            "its extension, as for ../fortunes/cookie) or jsonl (each line of the files a JSON "
            'object {"text": ..., "label": ...}); a document without one gets <none>. Then '
            "sample --label and score --label, --classify choose one",
            "default_help": "none: an unconditioned model",
            "metavar": "SOURCE",
        },
    )
    document_order: str = dataclasses.field(
        default="auto",
        metadata={
            "help": "the order of the training documents in the streams: corpus (as read), "
            "shuffled (a fixed random order, seeded by --seed), or auto: shuffled with "
            "--labels, where documents of one label in a row would let the carried state stand "
            "in for the label, corpus order otherwise. Validation keeps corpus order",
            "metavar": "ORDER",
        },
    )
    encoding: str = dataclasses.field(
        default="utf-8",
        metadata={
            "help": "codec of the corpus, any Python codec: utf-8, gbk, gb18030, big5, latin-1, "
            "utf-16, ..."
        },
    )
    keep_newlines: bool = dataclasses.field(
        default=False,
        metadata={"help": "keep \\r\\n line ends as they are instead of normalising them to \\n"},
    )
    level: str = dataclasses.field(
        default="char", metadata={"help": "what one token is: char or word"}
    )
    segmenter: str = dataclasses.field(
        default="auto",
        metadata={
            "help": "word level: regex (words, numbers, punctuation), jieba (Chinese; "
            "pip install '.[zh]') or whitespace; auto picks jieba for Chinese text, "
            "regex otherwise"
        },
    )
    min_count: int = dataclasses.field(
        default=1, metadata={"help": "tokens seen fewer times than this map to <unk>; at least 1"}
    )
    max_vocab: int = dataclasses.field(
        default=0,
        metadata={
            "help": "keep only this many of the most frequent tokens, <unk> included: 0 (no limit) "
            "or at least 2"
        },
    )
    cell: str = loop_field("cell")
    num_layers: int = dataclasses.field(
        default=2, metadata={"help": "number of stacked recurrent layers"}
    )
    hidden_size: int = dataclasses.field(
        default=256, metadata={"help": "units per recurrent layer"}
    )
    embedding_size: int = dataclasses.field(
        default=64, metadata={"help": "size of the token embedding"}
    )
    label_embedding_size: int = dataclasses.field(
        default=16,
        metadata={"help": "with --labels: size of the label embedding v that Wih projects"},
    )
    label_injection: str = dataclasses.field(
        default="every-step",
        metadata={
            "help": "with --labels: where Wih v enters the first layer's gates: every-step "
            "(each step's input, so the label acts on every document wherever a stream "
            "is) or document-start (the step that follows each end-of-document token, as "
            "the captioner's image enters its first step)",
            "metavar": "WHERE",
        },
    )
    label_dropout: float = dataclasses.field(
        default=0.1,
        metadata={
            "help": "with --labels: the share of training documents trained as <none> (a "
            "fixed seeded choice), so that generating and scoring without a label works",
        },
    )
    # Fine-tuning (textgen.training.fine_tuning).
    init_from: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "RUN_DIR",
            "help": "fine-tune: start from the weights of RUN_DIR, a finished or interrupted run "
            "(its checkpoint.best.npz where it has one, else its latest checkpoint), or of the "
            "bundled shakespeare model (bundled). The new run in --out takes over the source's "
            "--cell, --num-layers, --hidden-size, --embedding-size, --level and --segmenter, and "
            "starts a fresh optimizer and schedule at a lower default --learning-rate; the "
            "vocabularies are merged, every token the source knows keeping its embedding and "
            "output rows",
        },
    )
    freeze_embedding: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "with --init-from: do not train the embedding (tokens new to the model keep "
            "their random rows), for a small corpus that would wear the source's down"
        },
    )
    freeze_layers: int = dataclasses.field(
        default=0,
        metadata={
            "metavar": "K",
            "help": "with --init-from: do not train the first K recurrent layers (the ones next "
            "to the embedding), for a small corpus; 0: train them all",
        },
    )
    dropout: float = dataclasses.field(
        default=0.1,
        metadata={
            "help": "dropout rate on each recurrent layer's output (between layers and before the "
            "softmax), in [0, 1)"
        },
    )
    batch_size: int = dataclasses.field(
        default=32,
        metadata={
            "help": "number of contiguous streams trained in parallel (rows per batch); the global "
            "batch under --strategy"
        },
    )
    seq_length: int = dataclasses.field(
        default=100,
        metadata={
            "help": "truncated-BPTT length: tokens per stream per batch; gradients flow this many "
            "steps back"
        },
    )
    stateful: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "reset the recurrent state before every batch instead of carrying each "
            "stream's state to its next batch (for comparison; worse models)"
        },
    )
    epochs: int = dataclasses.field(default=50, metadata={"help": "passes over the training text"})
    max_minutes: float = loop_field("max_minutes")
    max_steps: int = loop_field("max_steps")
    optimizer: str = dataclasses.field(
        default="adam", metadata={"help": "adam, rmsprop, adagrad (min-char-rnn's) or sgd"}
    )
    learning_rate: float = dataclasses.field(
        default=4e-3,
        metadata={
            "help": "initial learning rate, > 0. With --init-from the default is "
            f"{FINE_TUNE_LEARNING_RATE:g}, half: fine-tuning the bundled model for 25 epochs of "
            "60 kB of fortunes it came within 0.012 nats/char of 0.004's best validation loss "
            "and lost 0.035 after it, where 0.004 lost 0.16 as it overfit (on 480 kB for 200 "
            "steps 0.004 was 0.08 better: pass it for short runs on larger corpora)"
        },
    )
    lr_schedule: str = loop_field("lr_schedule")
    min_learning_rate: float = loop_field("min_learning_rate")
    lr_decay: float = loop_field("lr_decay")
    lr_decay_after: int = dataclasses.field(
        default=2, metadata={"help": "epochs at the initial learning rate before --lr-decay starts"}
    )
    grad_clip: float = loop_field("grad_clip")
    val_fraction: float = dataclasses.field(
        default=0.1,
        metadata={
            "help": "fraction of the corpus held out for validation, in (0, 0.5]: of its "
            "documents (a fixed choice, seeded by --seed) when it has several, else of its "
            "text, taken from its end"
        },
    )
    eval_every: int = dataclasses.field(
        default=0,
        metadata={
            "help": "also evaluate on the validation text every N training steps (0: only at "
            "the end of every epoch and of the run)"
        },
    )
    patience: int = dataclasses.field(
        default=0,
        metadata={
            "help": "stop early after N evaluations in a row (epoch ends and --eval-every) "
            "without a better validation loss (0: never). The best evaluation's weights are "
            "kept in RUN/checkpoint.best.npz whatever this is, and sample, score and export "
            "use them"
        },
    )
    val_max_tokens: int = dataclasses.field(
        default=0,
        metadata={
            "help": "tokens of one validation pass at most: the first tokens of every validation "
            "stream, the same ones at every evaluation; 0: auto, the whole validation text up to "
            f"the larger of {VAL_MAX_TOKENS_FLOOR:,} tokens and 0.1 times the tokens trained "
            "between two evaluations (so that validation takes about 5 percent of the training "
            "time); resolved when the run starts and saved with it"
        },
    )
    seed: int = loop_field("seed")
    out: str = dataclasses.field(
        default="runs/default",
        metadata={"help": "run directory for config.json, vocab.json and checkpoint.npz"},
    )
    resume: bool = loop_field("resume")
    resume_from: str = loop_field("resume_from")
    sample_every: int = dataclasses.field(
        default=500, metadata={"help": "print a sample from the model every N steps (0: never)"}
    )
    sample_length: int = dataclasses.field(
        default=200,
        metadata={"help": "characters (tokens for word-level models) per periodic sample"},
    )
    checkpoint_every: int = loop_field("checkpoint_every")
    export: bool = dataclasses.field(
        default=True, metadata={"help": "do not export RUN_DIR/saved_model when training finishes"}
    )
    strategy: str = dataclasses.field(
        default="auto",
        metadata={
            "help": "tf.distribute strategy: auto (MirroredStrategy over all GPUs if more than "
            "one), none, mirrored, or multiworker (MultiWorkerMirroredStrategy, configured by "
            "TF_CONFIG); --batch-size is the global batch"
        },
    )
    fused: str = loop_field("fused")
    precision: str = loop_field("precision")
    # Parts, because TensorFlow's per-op threading keeps two cores only ~1.5x as busy as one on
    # the small per-step matmuls.
    batch_parts: int = dataclasses.field(
        default=0,
        metadata={
            "help": "CPU training: split each batch's streams into this many groups that run in "
            "parallel, one thread each, at most --batch-size; 0: one group per core, each of "
            "at least 16 streams, when no GPU or strategy is in use; 1: off"
        },
    )

    def __post_init__(self):
        normalise_data(self)


# Fields that fix the model and the data layout; a resumed run must keep them.
RUN_IDENTITY = (
    "data",
    "glob",
    "document_boundary",
    "labels",
    "document_order",
    "encoding",
    "keep_newlines",
    "level",
    "segmenter",
    "min_count",
    "max_vocab",
    "cell",
    "num_layers",
    "hidden_size",
    "embedding_size",
    "label_embedding_size",
    "label_injection",
    "label_dropout",
    "init_from",
    "freeze_embedding",
    "freeze_layers",
    "dropout",
    "batch_size",
    "seq_length",
    "stateful",
    "optimizer",
    "val_fraction",
    "seed",
)

OPTIMIZERS = ("adam", "rmsprop", "adagrad", "sgd")
LABEL_SOURCES = ("folder", "jsonl")
LABEL_INJECTIONS = ("every-step", "document-start")
DOCUMENT_ORDERS = ("auto", "corpus", "shuffled")


def validate(config):
    """Raises UsageError for a value no run could use, naming the flag and the allowed range."""
    positive_ints = (
        "num_layers",
        "hidden_size",
        "embedding_size",
        "label_embedding_size",
        "batch_size",
        "seq_length",
        "epochs",
        "sample_length",
        "checkpoint_every",
    )
    for name in positive_ints:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise UsageError(f"`{name}` must be a positive integer, got {value}")
    for name in ("max_steps", "sample_every", "eval_every", "val_max_tokens", "patience"):
        if getattr(config, name) < 0:
            raise UsageError(f"`{name}` must be >= 0, got {getattr(config, name)}")
    if not config.learning_rate > 0:
        raise UsageError(f"`learning_rate` must be positive, got {config.learning_rate}")
    if config.freeze_layers < 0:
        raise UsageError(f"`freeze_layers` must be >= 0, got {config.freeze_layers}")
    if (config.freeze_embedding or config.freeze_layers) and not config.init_from:
        raise UsageError(
            "`freeze_embedding` and `freeze_layers` need `init_from`: a model trained from "
            "random weights has nothing to keep"
        )
    validate_shared(config)
    validate_tokenisation(config)
    if config.label_injection not in LABEL_INJECTIONS:
        raise UsageError(
            f"`label_injection` must be {' or '.join(LABEL_INJECTIONS)}, got "
            f"{config.label_injection!r}"
        )
    if not 0 <= config.label_dropout < 1:
        raise UsageError(f"`label_dropout` must be in [0, 1), got {config.label_dropout}")
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(
            f"`optimizer` must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}"
        )
    if config.batch_parts < 0 or config.batch_parts > config.batch_size:
        raise UsageError(
            f"`batch_parts` must be between 0 (auto) and `batch_size` "
            f"({config.batch_size}), got {config.batch_parts}"
        )


def validate_tokenisation(config):
    """The checks of the flags that say how a corpus is read and tokenised (textgen.train and
    textgen.prepare)."""
    parse_document_boundary(config.document_boundary)
    if config.document_order not in DOCUMENT_ORDERS:
        raise UsageError(
            f"`document_order` must be {', '.join(DOCUMENT_ORDERS)}, got {config.document_order!r}"
        )
    if config.labels not in ("", *LABEL_SOURCES):
        raise UsageError(f"`labels` must be folder or jsonl (or none), got {config.labels!r}")
    if not 0 < config.val_fraction <= 0.5:
        raise UsageError(f"`val_fraction` must be in (0, 0.5], got {config.val_fraction}")
    if config.level not in ("char", "word"):
        raise UsageError(f"`level` must be char or word, got {config.level!r}")
    if config.segmenter not in ("auto", "regex", "jieba", "whitespace"):
        raise UsageError(
            f"`segmenter` must be auto, regex, jieba or whitespace, got {config.segmenter!r}"
        )
    if config.min_count < 1:
        raise UsageError(f"`min_count` must be a positive integer, got {config.min_count}")
    if config.max_vocab < 0 or config.max_vocab == 1:
        raise UsageError(f"`max_vocab` must be 0 (no limit) or at least 2, got {config.max_vocab}")


def parse_document_boundary(value):
    """A `document_boundary` as (kind, separator): file, line and paragraph with None,
    separator:TEXT with TEXT (white space around it dropped). UsageError for anything else."""
    kind, colon, separator = str(value).partition(":")
    if kind in ("file", "line", "paragraph") and not colon:
        return kind, None
    if kind == "separator" and separator.strip():
        return kind, separator.strip()
    raise UsageError(
        "`document_boundary` must be file, line, paragraph or separator:TEXT (such as "
        f"separator:%), got {value!r}"
    )


def normalise_data(config):
    """`data` given as a list (the CLIs' --data takes several paths) is kept as a list only
    when it names several: one path stays a string, as config.json has always held it."""
    if isinstance(config.data, (list, tuple)):
        paths = [str(path) for path in config.data]
        config.data = paths[0] if len(paths) == 1 else paths


def validate_shared(config):
    """The checks of the flags textgen.train and captioning.train share (schedule, clipping,
    time budget, dropout, cell, kernels, strategy); UsageError for the first bad one."""
    if config.lr_schedule not in ("constant", "cosine"):
        raise UsageError(f"`lr_schedule` must be constant or cosine, got {config.lr_schedule!r}")
    if not 0 <= config.min_learning_rate <= config.learning_rate:
        raise UsageError(
            f"`min_learning_rate` must be in [0, `learning_rate` {config.learning_rate}], "
            f"got {config.min_learning_rate}"
        )
    if not 0 < config.lr_decay <= 1:
        raise UsageError(f"`lr_decay` must be in (0, 1], got {config.lr_decay}")
    if config.lr_decay_after < 0:
        raise UsageError(f"`lr_decay_after` must be >= 0, got {config.lr_decay_after}")
    if config.grad_clip < 0:
        raise UsageError(f"`grad_clip` must be >= 0 (0 turns clipping off), got {config.grad_clip}")
    if config.max_minutes < 0:
        raise UsageError(f"`max_minutes` must be >= 0 (0 means no limit), got {config.max_minutes}")
    if not 0 <= config.dropout < 1:
        raise UsageError(f"`dropout` must be in [0, 1), got {config.dropout}")
    if config.cell not in ("lstm", "gru", "rnn"):
        raise UsageError(f"`cell` must be lstm, gru or rnn, got {config.cell!r}")
    if config.strategy not in ("auto", "none", "mirrored", "multiworker"):
        raise UsageError(
            f"`strategy` must be auto, none, mirrored or multiworker, got {config.strategy!r}"
        )
    if config.fused not in ("auto", "on", "off"):
        raise UsageError(f"`fused` must be auto, on or off, got {config.fused!r}")
    if config.precision not in ("auto", "float32", "bfloat16"):
        raise UsageError(f"`precision` must be auto, float32 or bfloat16, got {config.precision!r}")
    if config.precision == "bfloat16" and config.fused == "off":
        raise UsageError(
            "`precision` bfloat16 runs on the lean kernels, and `fused` off asks for the stock "
            "Keras layers: use `fused` auto or on, or `precision` float32"
        )
    if config.resume_from not in ("latest", "previous"):
        raise UsageError(f"`resume_from` must be latest or previous, got {config.resume_from!r}")
    if config.resume_from != "latest" and not config.resume:
        raise UsageError("`resume_from` previous needs `resume`")


def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known})


def train_field(name, **metadata):
    """The TrainConfig field `name` for another CLI that takes the same flag: one default, one
    --help text (`metadata` overrides parts of it)."""
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    return dataclasses.field(default=field.default, metadata={**field.metadata, **metadata})


@dataclasses.dataclass
class PrepareConfig:
    """`python -m textgen.prepare`: the corpus and tokenisation flags of TrainConfig, and where
    the prepared corpus goes."""

    data: str = train_field(
        "data",
        help="the corpus: a text file, a folder of text files (searched recursively, in sorted "
        "order; each file is a document), or several of those",
    )
    glob: str = train_field("glob")
    document_boundary: str = train_field("document_boundary")
    labels: str = train_field("labels")
    document_order: str = train_field("document_order")
    seed: int = train_field(
        "seed",
        help="which documents --val-fraction holds out, a fixed seeded choice (textgen.train "
        "--data FOLDER takes its own --seed; a prepared directory keeps its choice)",
    )
    encoding: str = train_field("encoding")
    keep_newlines: bool = train_field("keep_newlines")
    level: str = train_field("level")
    segmenter: str = train_field("segmenter")
    min_count: int = train_field("min_count")
    max_vocab: int = train_field("max_vocab")
    val_fraction: float = train_field("val_fraction")
    out: str = dataclasses.field(
        default="",
        metadata={
            "help": "directory to write the prepared corpus to (header.json, vocab.json, "
            "train.bin, val.bin); an earlier prepared corpus there is replaced",
            "required": True,
            "metavar": "DIR",
        },
    )
    workers: int = dataclasses.field(
        default=0,
        metadata={"help": "processes that segment the text with jieba (0: one per core)"},
    )

    def __post_init__(self):
        normalise_data(self)


def validate_prepare(config):
    validate_tokenisation(config)
    if config.workers < 0:
        raise UsageError(f"`workers` must be >= 0 (0: one per core), got {config.workers}")
