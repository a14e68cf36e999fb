"""`python -m textgen.sample RUN_DIR`: generate text from a trained run."""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen.cli import ArgumentParser  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402


@dataclasses.dataclass
class SampleConfig:
    run_directory: str
    prime: str = ""            # text the samples start with; fed in one call to warm up the state
    length: int = 500          # characters per sample, prime included
    temperature: float = 1.0   # 0 is argmax; below 1 is more conservative, above 1 more varied
    top_k: int = 0             # draw only from the k most probable characters (0: all)
    num_samples: int = 1       # samples, generated together as one batch
    seed: int = 0              # the same seed gives the same text
    unknown: str = "error"     # a prime character outside the vocabulary: error or skip
    allow_unk: bool = False    # word level: let samples contain <unk>


def build_parser():
    d = SampleConfig("")
    p = ArgumentParser(prog="python -m textgen.sample",
                       description="Generate text from a textgen run directory.")
    p.add_argument("run_directory", metavar="RUN_DIR", help="the --out directory of a training run")
    p.add_argument("--prime", default=d.prime, help="text the samples start with (default: none)")
    p.add_argument("--length", type=int, default=d.length,
                   help=f"characters (tokens for word-level models) per sample, prime included "
                        f"(default: {d.length})")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"sampling temperature; 0 means argmax (default: {d.temperature})")
    p.add_argument("--top-k", type=int, default=d.top_k,
                   help="sample only among the k most probable characters; 0 means no cut (default: 0)")
    p.add_argument("--num-samples", type=int, default=d.num_samples,
                   help=f"number of samples, generated as one batch (default: {d.num_samples})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default: {d.seed})")
    p.add_argument("--unknown", choices=("error", "skip"), default=d.unknown,
                   help="what to do with prime characters outside the vocabulary (default: error)")
    p.add_argument("--allow-unk", action="store_true",
                   help="word-level models: allow <unk> in the samples (never emitted by default)")
    return p


def sample(config):
    """Loads the run and returns its samples (a list of strings)."""
    from textgen.language_model import check_sampling_arguments
    from textgen.trainer import load_language_model

    check_sampling_arguments(config.length, config.temperature, config.top_k, config.num_samples)
    model = load_language_model(config.run_directory)
    return model.sample(config.prime, config.length, config.temperature, config.top_k,
                        config.num_samples, config.seed, config.unknown, config.allow_unk)


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
