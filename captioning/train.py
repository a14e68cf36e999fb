"""`python -m captioning.train`: train a CNN + LSTM/GRU/RNN image captioning model.

Every flag is a field of `captioning.config.CaptionTrainConfig`; `--help` (or docs/flags.md)
lists them.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen._quiet_import import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

from captioning.config import CaptionTrainConfig  # noqa: E402
from textgen import cli  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402


def build_parser():
    parser = cli.build_parser(
        CaptionTrainConfig,
        "python -m captioning.train",
        "Train an image captioning model: a CNN encoder whose feature vector enters a textgen "
        "recurrent stack at the first step (cs231n / neuraltalk2 style).",
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
    from captioning.training.caption_trainer import CaptionTrainer

    progress_bar = False if args.pop("no_progress", False) else None
    config = CaptionTrainConfig(**args)
    CaptionTrainer.train_run(config, explicit=args.keys(), progress_bar=progress_bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
