"""`python -m textgen.prepare`: tokenise a corpus once into a directory that training
memory-maps (`textgen.corpus.prepared_corpus`), for corpora of any size.

    python -m textgen.prepare --data big.txt --out data/big
    python -m textgen.train --data data/big --out runs/big

Every flag is a field of `textgen.config.PrepareConfig`; `--help` (or docs/flags.md) lists them.
"""

import sys

from textgen import cli
from textgen.config import PrepareConfig, validate_prepare
from textgen.errors import cli_errors


def build_parser():
    parser = cli.build_parser(
        PrepareConfig,
        "python -m textgen.prepare",
        "Tokenise a corpus into a vocabulary and flat binary token ids (uint8, uint16 or uint32) "
        "that python -m textgen.train --data DIR memory-maps.",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bars (they are also hidden when output is not a terminal)",
    )
    return parser


@cli_errors
def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    from textgen.corpus.prepared_corpus import main_prepare

    progress = False if args.pop("no_progress", False) else None
    config = PrepareConfig(**args)
    validate_prepare(config)
    main_prepare(config, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
