"""`python -m textgen.sample RUN_DIR`: generate text from a trained run."""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen import cli  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402


@dataclasses.dataclass
class SampleConfig:
    run_directory: str = dataclasses.field(
        metadata={"metavar": "RUN_DIR", "help": "the --out directory of a training run"}
    )
    # Fed in one call, so it warms up the state as well as starting the text.
    prime: str = dataclasses.field(
        default="", metadata={"default_help": "none", "help": "text the samples start with"}
    )
    length: int = dataclasses.field(
        default=500,
        metadata={
            "help": "characters (tokens for word-level models) per sample, prime included; > 0"
        },
    )
    temperature: float = dataclasses.field(
        default=1.0,
        metadata={
            "help": "sampling temperature, >= 0: 0 is argmax, below 1 more conservative, above 1 "
            "more varied"
        },
    )
    top_k: int = dataclasses.field(
        default=0,
        metadata={
            "help": "sample only among the k most probable characters (tokens); 0 means no cut"
        },
    )
    num_samples: int = dataclasses.field(
        default=1, metadata={"help": "number of samples, generated together as one batch"}
    )
    seed: int = dataclasses.field(
        default=0, metadata={"help": "random seed: the same seed gives the same text"}
    )
    unknown: str = dataclasses.field(
        default="error",
        metadata={
            "choices": ("error", "skip"),
            "help": "what to do with prime characters outside the vocabulary",
        },
    )
    allow_unk: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "word-level models: allow <unk> in the samples (never emitted by default)"
        },
    )


def build_parser():
    return cli.build_parser(
        SampleConfig,
        "python -m textgen.sample",
        "Generate text from a textgen run directory.",
        positionals=("run_directory",),
    )


def sample(config):
    """Loads the run and returns its samples (a list of strings)."""
    # Imported here, so that --help and flag errors answer without loading TensorFlow.
    from textgen.language_model import LanguageModel, check_sampling_arguments

    check_sampling_arguments(config.length, config.temperature, config.top_k, config.num_samples)
    model = LanguageModel.from_run_directory(config.run_directory)
    return model.sample(
        config.prime,
        config.length,
        config.temperature,
        config.top_k,
        config.num_samples,
        config.seed,
        config.unknown,
        config.allow_unk,
    )


@cli_errors
def main(argv=None):
    config = SampleConfig(**vars(build_parser().parse_args(argv)))
    texts = sample(config)
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"---- sample {i + 1} ----")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
