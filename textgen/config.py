"""Training configuration: plain typed values with defaults, one comment each.

The defaults are the ones that gave the best tiny-shakespeare validation loss in a 10-minute
budget on a 2-core CPU (see the README's quality section).
"""

import dataclasses
import os

from textgen.errors import UsageError

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "data", "tinyshakespeare", "input.txt")


@dataclasses.dataclass
class TrainConfig:
    data: str = DEFAULT_DATA          # corpus file; the embedded tiny-shakespeare by default
    encoding: str = "utf-8"           # any Python codec: utf-8, gbk, latin-1, utf-16, ...
    keep_newlines: bool = False       # keep \r\n as it is instead of normalising it to \n
    level: str = "char"               # char | word: what one token is
    segmenter: str = "auto"           # word level: regex | jieba | whitespace (auto: jieba for Chinese text)
    min_count: int = 1                # tokens seen fewer times map to <unk>
    max_vocab: int = 0                # keep at most this many tokens, <unk> included (0: all)
    cell: str = "lstm"                # lstm | gru | rnn
    num_layers: int = 2               # stacked recurrent layers
    hidden_size: int = 256            # units per recurrent layer
    embedding_size: int = 64          # token embedding size
    dropout: float = 0.1              # dropout on each recurrent layer's output
    batch_size: int = 32              # parallel streams (rows) per batch
    seq_length: int = 100             # truncated-BPTT length: gradients flow through this many steps
    stateful: bool = True             # carry each stream's state to its next batch (off: reset every batch)
    epochs: int = 50                  # passes over the training text
    max_minutes: float = 0.0          # stop, after a checkpoint, once training has run this long (0: no limit)
    max_steps: int = 0                # stop after this many training steps in all (0: no limit)
    optimizer: str = "adam"           # adam | rmsprop | adagrad | sgd
    learning_rate: float = 4e-3       # initial learning rate
    lr_decay: float = 0.8             # multiply the learning rate by this every epoch ...
    lr_decay_after: int = 2           # ... after this many epochs (char-rnn's schedule)
    grad_clip: float = 5.0            # global-norm gradient clipping (0: off)
    val_fraction: float = 0.1         # contiguous tail of the corpus held out for validation
    seed: int = 0                     # same seed and data give the same losses
    out: str = "runs/default"         # run directory: config, vocabulary, checkpoint
    resume: bool = False              # continue the run in --out from its last checkpoint
    resume_from: str = "latest"       # with --resume: latest, or previous (checkpoint.prev.npz) when the latest is damaged
    sample_every: int = 500           # print a short sample every N steps (0: never)
    sample_length: int = 200          # characters in those samples
    checkpoint_every: int = 500       # write a checkpoint every N steps (and always at the end)
    export: bool = True               # export RUN_DIR/saved_model when training finishes
    strategy: str = "auto"            # auto | none | mirrored | multiworker (tf.distribute); --batch-size is global
    fused: str = "auto"               # auto | on | off: lean CPU kernels or the stock Keras layers
    batch_parts: int = 0              # CPU: run each batch as this many groups of streams in parallel, one thread each (0: auto, 1: off)


# Fields that fix the model and the data layout; a resumed run must keep them.
RUN_IDENTITY = ("data", "encoding", "keep_newlines", "level", "segmenter", "min_count",
                "max_vocab", "cell", "num_layers", "hidden_size", "embedding_size",
                "dropout", "batch_size", "seq_length", "stateful", "optimizer", "val_fraction", "seed")

OPTIMIZERS = ("adam", "rmsprop", "adagrad", "sgd")


def validate(config):
    """Raises UsageError for a value no run could use, naming the flag and the allowed range."""
    positive_ints = ("num_layers", "hidden_size", "embedding_size", "batch_size", "seq_length",
                     "epochs", "sample_length", "checkpoint_every")
    for name in positive_ints:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name in ("max_steps", "sample_every"):
        if getattr(config, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if not config.learning_rate > 0:
        raise UsageError(f"--learning-rate must be positive, got {config.learning_rate}")
    validate_shared(config)
    if not 0 < config.val_fraction <= 0.5:
        raise UsageError(f"--val-fraction must be in (0, 0.5], got {config.val_fraction}")
    if config.level not in ("char", "word"):
        raise UsageError(f"--level must be char or word, got {config.level!r}")
    if config.segmenter not in ("auto", "regex", "jieba", "whitespace"):
        raise UsageError(f"--segmenter must be auto, regex, jieba or whitespace, got {config.segmenter!r}")
    if config.min_count < 1:
        raise UsageError(f"--min-count must be a positive integer, got {config.min_count}")
    if config.max_vocab < 0 or config.max_vocab == 1:
        raise UsageError(f"--max-vocab must be 0 (no limit) or at least 2, got {config.max_vocab}")
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.batch_parts < 0 or config.batch_parts > config.batch_size:
        raise UsageError(f"--batch-parts must be between 0 (auto) and --batch-size "
                         f"({config.batch_size}), got {config.batch_parts}")


def validate_shared(config):
    """The checks of the flags textgen.train and captioning.train share (schedule, clipping,
    time budget, dropout, cell, kernels, strategy); UsageError for the first bad one."""
    if not 0 < config.lr_decay <= 1:
        raise UsageError(f"--lr-decay must be in (0, 1], got {config.lr_decay}")
    if config.lr_decay_after < 0:
        raise UsageError(f"--lr-decay-after must be >= 0, got {config.lr_decay_after}")
    if config.grad_clip < 0:
        raise UsageError(f"--grad-clip must be >= 0 (0 turns clipping off), got {config.grad_clip}")
    if config.max_minutes < 0:
        raise UsageError(f"--max-minutes must be >= 0 (0 means no limit), got {config.max_minutes}")
    if not 0 <= config.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {config.dropout}")
    if config.cell not in ("lstm", "gru", "rnn"):
        raise UsageError(f"--cell must be lstm, gru or rnn, got {config.cell!r}")
    if config.strategy not in ("auto", "none", "mirrored", "multiworker"):
        raise UsageError(f"--strategy must be auto, none, mirrored or multiworker, got {config.strategy!r}")
    if config.fused not in ("auto", "on", "off"):
        raise UsageError(f"--fused must be auto, on or off, got {config.fused!r}")
    if config.resume_from not in ("latest", "previous"):
        raise UsageError(f"--resume-from must be latest or previous, got {config.resume_from!r}")
    if config.resume_from != "latest" and not config.resume:
        raise UsageError("--resume-from previous needs --resume")


def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known})
