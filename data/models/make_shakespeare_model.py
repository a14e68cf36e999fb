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
   path made relative to the repository), vocab.json, a checkpoint.npz holding only the model's
   weights (no optimizer state: a third of the size; the model cannot be resumed, only used) and
   eval.json with the final validation loss.

Run it from the repository root.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

MAX_STEPS = 4500  # bench/README.md: the 10-minute default run made 4,546 steps
MODEL = os.path.join("data", "models", "shakespeare")
CORPUS = os.path.join("data", "tinyshakespeare", "input.txt")
DEFAULT_WORK = os.path.join("runs", "bundled_shakespeare")


def run(*command):
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def final_evaluation(run_directory, progress):
    """The last validation row of the run: from RUN/metrics.jsonl where the run wrote one, else
    from the checkpoint's progress (runs from before the metrics log)."""
    path = os.path.join(run_directory, "metrics.jsonl")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        evaluations = [r for r in rows if r.get("kind") == "eval"]
        if evaluations:
            last = evaluations[-1]
            return last["val_loss"], last.get("step", progress["global_step"])
    if progress.get("final_val_loss") is not None:
        return progress["final_val_loss"], progress["global_step"]
    return progress["history"][-1]["val_loss"], progress["global_step"]


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
    val_loss, step = final_evaluation(run_directory, progress)
    kept = {"global_step": progress["global_step"], "epoch": progress.get("epoch", 0)}
    weights["progress"] = np.frombuffer(json.dumps(kept).encode("utf-8"), dtype=np.uint8)
    np.savez(os.path.join(out, "checkpoint.npz"), **weights)
    evaluation = {
        "corpus": CORPUS,
        "held_out": f"the last {config['val_fraction']:.0%} of the corpus",
        "steps": progress["global_step"],
        "evaluated_at_step": step,
        "val_nats_per_char": round(val_loss, 4),
        "val_bits_per_char": round(val_loss / math.log(2), 4),
        "val_perplexity": round(math.exp(val_loss), 3),
    }
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
    args = parser.parse_args(argv)
    run_directory = os.path.join(args.work, "run")
    run(
        sys.executable,
        "-m",
        "textgen.train",
        "--data",
        CORPUS,
        "--out",
        run_directory,
        "--max-steps",
        str(args.max_steps),
        "--no-export",
        "--no-progress",
    )
    evaluation = package(run_directory, MODEL)
    print(f"wrote {MODEL}: {json.dumps(evaluation)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
