"""`python -m textgen.train`: train a char- or word-level recurrent language model.

Every flag is a field of `textgen.config.TrainConfig`; `--help` (or docs/flags.md) lists them.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen import cli  # noqa: E402
from textgen.config import TrainConfig  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402


def build_parser():
    parser = cli.build_parser(
        TrainConfig,
        "python -m textgen.train",
        "Train a char- or word-level LSTM/GRU/RNN language model with stateful truncated BPTT.",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (it is also hidden when output is not a terminal)",
    )
    return parser


@cli_errors
def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    # After parsing, so that --help and flag errors answer before TensorFlow loads.
    from textgen.training.text_trainer import TextTrainer

    progress_bar = False if args.pop("no_progress", False) else None
    config = TrainConfig(**args)
    TextTrainer.train_run(config, explicit=args.keys(), progress_bar=progress_bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
