"""`python -m textgen.train`: train a char-level recurrent language model (see README for every flag)."""

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen.cli import ArgumentParser  # noqa: E402
from textgen.config import TrainConfig  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402

HELP = {
    "data": "corpus text file (default: the embedded data/tinyshakespeare/input.txt)",
    "encoding": "codec of the corpus: utf-8, gbk, gb18030, big5, latin-1, utf-16, ...",
    "keep_newlines": "keep \\r\\n line ends instead of normalising them to \\n",
    "level": "char or word: what one token is",
    "segmenter": "word level: regex (words, numbers, punctuation), jieba (Chinese; pip install '.[zh]') or whitespace; auto picks jieba for Chinese text, regex otherwise",
    "min_count": "tokens seen fewer times than this map to <unk>",
    "max_vocab": "keep only the most frequent tokens, <unk> included (0: no limit)",
    "cell": "recurrent cell: lstm, gru or rnn (tanh)",
    "num_layers": "number of stacked recurrent layers",
    "hidden_size": "units per recurrent layer",
    "embedding_size": "size of the character embedding",
    "dropout": "dropout rate on each recurrent layer's output (between layers and before the softmax)",
    "batch_size": "number of contiguous streams trained in parallel",
    "seq_length": "truncated-BPTT length: characters per stream per batch; gradients flow this far back",
    "stateful": "(flag, on by default) see --no-stateful",
    "epochs": "passes over the training text",
    "max_minutes": "stop cleanly, after saving a checkpoint, once training has run this many minutes (0: no limit)",
    "max_steps": "stop after this many training steps in all, counting resumed ones (0: no limit)",
    "optimizer": "adam, rmsprop, adagrad (min-char-rnn's) or sgd",
    "learning_rate": "initial learning rate",
    "lr_decay": "multiply the learning rate by this at every epoch after --lr-decay-after (1: constant)",
    "lr_decay_after": "epochs at the initial learning rate before --lr-decay starts",
    "grad_clip": "clip the gradients' global norm to this (0: off)",
    "val_fraction": "fraction of the corpus, taken from its end, held out for validation; in (0, 0.5]",
    "seed": "random seed: the same seed and data give the same losses",
    "out": "run directory for config.json, vocab.json and checkpoint.npz",
    "resume": "continue the run in --out from its last checkpoint",
    "resume_from": "with --resume: latest (checkpoint.npz), or previous (checkpoint.prev.npz, the one before it, kept for when the latest is damaged)",
    "sample_every": "print a sample from the model every N steps (0: never)",
    "sample_length": "characters per periodic sample",
    "checkpoint_every": "write a checkpoint every N steps (one is always written at each epoch end and at the end)",
    "export": "(on by default) see --no-export",
    "batch_parts": "CPU training: split each batch's streams into this many groups that run in parallel, one thread each (TensorFlow's per-op threading keeps two cores only ~1.5x as busy as one on the small per-step matmuls); 0: one group per core, each of at least 16 streams, when no GPU or strategy is in use; 1: off",
    "strategy": "tf.distribute strategy: auto (MirroredStrategy over all GPUs if more than one), none, mirrored, or multiworker (MultiWorkerMirroredStrategy, configured by TF_CONFIG); --batch-size is the global batch",
    "fused": "auto, on or off: run the recurrent layers through the lean CPU kernels, the LSTM on textgen's C++ ops where they build (auto: when no GPU is visible)",
}


def build_parser():
    parser = ArgumentParser(
        prog="python -m textgen.train", argument_default=argparse.SUPPRESS,
        description="Train a char- or word-level LSTM/GRU/RNN language model with stateful truncated BPTT.")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = HELP[field.name]
        if field.name == "stateful":
            parser.add_argument("--no-stateful", dest="stateful", action="store_false",
                                help="reset the recurrent state before every batch instead of "
                                     "carrying it across batches (for comparison; worse models)")
            continue
        if field.name == "export":
            parser.add_argument("--no-export", dest="export", action="store_false",
                                help="do not export RUN_DIR/saved_model when training finishes")
            continue
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        if field.name != "data":
            help_text += f" (default: {default})"
        parser.add_argument(flag, type=type(default), metavar=field.name.upper(), help=help_text)
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar (it is also hidden when output is not a terminal)")
    return parser


@cli_errors
def main(argv=None):
    from textgen.trainer import train

    args = vars(build_parser().parse_args(argv))
    progress_bar = False if args.pop("no_progress", False) else None
    config = TrainConfig(**args)
    train(config, explicit=args.keys(), progress_bar=progress_bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
