"""Char-level against word-level on tiny-shakespeare at the same time budget.

    .venv/bin/python bench/char_vs_word.py --minutes 5

Both runs report validation bits per character of the original text (total nats over total
characters, divided by ln 2), so the two levels compare on the same validation text.
"""

import argparse
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from textgen.config import TrainConfig  # noqa: E402
from textgen.training.text_trainer import TextTrainer  # noqa: E402


def run(minutes, out, **overrides):
    config = TrainConfig(max_minutes=minutes, out=out, sample_every=0, export=False, **overrides)
    trainer = TextTrainer(config, log=lambda m: None, progress_bar=False)
    trainer.prepare()
    result = trainer.train()
    nats = result.final_val_loss
    return {
        "tokens": len(trainer.vocabulary),
        "nats": nats,
        "perplexity": math.exp(nats),
        "bpc": nats / trainer.characters_per_token / math.log(2),
        "steps": result.global_step,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="budget per run")
    args = parser.parse_args()
    directory = tempfile.mkdtemp()
    rows = [
        ("char", run(args.minutes, os.path.join(directory, "char"))),
        (
            "word (regex, min-count 3)",
            run(
                args.minutes,
                os.path.join(directory, "word"),
                level="word",
                segmenter="regex",
                min_count=3,
                seq_length=35,
                embedding_size=128,
            ),
        ),
    ]
    print(
        f"| model | vocabulary | steps in {args.minutes:g} min | val loss per token | "
        "perplexity | val bits/char |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['tokens']:,} | {r['steps']:,} | {r['nats']:.3f} nats | "
            f"{r['perplexity']:.1f} | {r['bpc']:.3f} |"
        )


if __name__ == "__main__":
    main()
