"""Rebuilds the bundled text model, data/models/shakespeare.

    python data/models/make_shakespeare_model.py [--work runs/bundled_shakespeare]

1. `python -m textgen.train` on the embedded tiny-shakespeare (data/tinyshakespeare/input.txt)
   with the default model and training settings (a 2x256 LSTM, embedding 64, batch 32 x 100,
   Adam 4e-3 on a cosine to 1e-4, dropout 0.1, the last 10% held out for validation) for
   MAX_STEPS steps: what the 10-minute default run reaches on an idle 2-core CPU
   (bench/README.md, Quality). A fixed step count, not --max-minutes, makes the rebuild
   repeatable whatever else runs on the machine (the cosine then follows the steps, not the
   clock);
2. copies what sampling and scoring need into data/models/shakespeare: config.json (the data
   path made relative to the repository), vocab.json and a checkpoint.npz holding only the
   model's weights (no optimizer state: a third of the size; the model cannot be resumed, only
   used);
3. scores the packaged model on the held-out tail (the last --val-fraction of the corpus, which
   training never saw) with `LanguageModel.score`, in 32 streams from zero state as training's
   validation reads it, and on the tail's first CHECK_CHARACTERS characters in CHECK_STREAMS
   streams (the figure tests/test_bundled_text_model.py recomputes), into eval.json.

Run it from the repository root.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

MAX_STEPS = 4500  # bench/README.md: the 10-minute default run made 4,546 steps
MODEL = os.path.join("data", "models", "shakespeare")
CORPUS = os.path.join("data", "tinyshakespeare", "input.txt")
DEFAULT_WORK = os.path.join("runs", "bundled_shakespeare")
VAL_STREAMS = 32  # as training's validation: --batch-size streams
CHECK_CHARACTERS, CHECK_STREAMS = 20_000, 16


def run(*command):
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def held_out_tail(config):
    """The validation text of the run: the corpus's last val_fraction, newlines normalised as
    training reads them."""
    from textgen.corpus.reading import read_text
    from textgen.corpus.stream_batches import validation_length

    text = read_text(CORPUS, config["encoding"], config["keep_newlines"])
    return text[len(text) - validation_length(len(text), config["val_fraction"]) :]


def evaluate(model_directory, config):
    """eval.json's figures: the whole held-out tail, and the bounded check."""
    from textgen.network.language_model import LanguageModel

    model = LanguageModel.from_run_directory(model_directory)
    tail = held_out_tail(config)
    whole = model.score(tail, streams=VAL_STREAMS)
    check = model.score(tail[:CHECK_CHARACTERS], streams=CHECK_STREAMS)
    return {
        "held_out": f"the last {config['val_fraction']:.0%} of {CORPUS}: {len(tail):,} characters",
        "val_streams": VAL_STREAMS,
        "val_nats_per_char": round(whole["nats_per_token"], 4),
        "val_bits_per_char": round(whole["bits_per_char"], 4),
        "val_perplexity": round(whole["perplexity"], 3),
        "check": {
            "characters": CHECK_CHARACTERS,
            "streams": CHECK_STREAMS,
            "nats_per_char": round(check["nats_per_token"], 5),
        },
    }


def package(run_directory, out):
    """The run's files a sampler needs: weights only, the corpus path relative."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with open(os.path.join(run_directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config.update(data=CORPUS, out=out, resume=False)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1, ensure_ascii=False)
    shutil.copy(os.path.join(run_directory, "vocab.json"), os.path.join(out, "vocab.json"))
    with np.load(os.path.join(run_directory, "checkpoint.npz"), allow_pickle=False) as data:
        progress = json.loads(data["progress"].tobytes().decode("utf-8"))
        weights = {k: data[k] for k in data.files if k.startswith("model/")}
    kept = {"global_step": progress["global_step"], "epoch": progress.get("epoch", 0)}
    weights["progress"] = np.frombuffer(json.dumps(kept).encode("utf-8"), dtype=np.uint8)
    np.savez(os.path.join(out, "checkpoint.npz"), **weights)
    evaluation = {"steps": progress["global_step"], **evaluate(out, config)}
    with open(os.path.join(out, "eval.json"), "w", encoding="utf-8") as f:
        json.dump(evaluation, f, indent=1)
    return evaluation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        default=DEFAULT_WORK,
        help=f"directory for the full run (default: {DEFAULT_WORK})",
    )
    parser.add_argument(
        "--max-steps", type=int, default=MAX_STEPS, help=f"training steps (default: {MAX_STEPS})"
    )
    parser.add_argument(
        "--package-only", action="store_true", help="package WORK/run again, without training"
    )
    args = parser.parse_args(argv)
    run_directory = os.path.join(args.work, "run")
    if not args.package_only:
        train(run_directory, args.max_steps)
    evaluation = package(run_directory, MODEL)
    print(f"wrote {MODEL}: {json.dumps(evaluation)}")
    return 0


def train(run_directory, max_steps):
    run(
        sys.executable,
        "-m",
        "textgen.train",
        "--data",
        CORPUS,
        "--out",
        run_directory,
        "--max-steps",
        str(max_steps),
        "--no-export",
        "--no-progress",
    )


if __name__ == "__main__":
    sys.exit(main())
