"""Quality benchmark: the default training command under a time budget, and its loss curve.

    .venv/bin/python bench/quality.py --minutes 10 --out runs/quality
    .venv/bin/python bench/quality.py --plot-only --out runs/quality

Trains with the default configuration (`python -m textgen.train --max-minutes 10`) on the
embedded tiny-shakespeare, then plots training and validation loss (nats/char) against
training time to bench/quality_curve.png and prints the final validation loss. The plot needs
matplotlib (`pip install -e '.[bench]'`).
"""

import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def plot(run, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textgen.training.metrics_log import FILE, evaluations, read_rows, step_losses

    rows = read_rows(os.path.join(run, FILE))
    losses = np.asarray(step_losses(rows))
    # Every epoch's end and the final weights. Steps are timed only there; in between, time is
    # interpolated linearly.
    points = evaluations(rows)
    ends = [0] + [h["step"] for h in points]
    times = [0.0] + [h["seconds"] for h in points]
    step_times = np.interp(np.arange(1, len(losses) + 1), ends, times) / 60
    window = 25
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    axes.plot(step_times[window - 1 :], smooth, label="train (25-step mean)", color="tab:blue")
    axes.plot(
        [h["seconds"] / 60 for h in points],
        [h["val"] for h in points],
        "o-",
        label="validation",
        color="tab:red",
    )
    axes.axhline(1.5, color="gray", linestyle=":", label="target 1.50")
    axes.set_xlabel("training time (minutes, 2-core CPU)")
    axes.set_ylabel("loss (nats/char)")
    axes.set_ylim(1.0, 3.0)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("tiny-shakespeare, default configuration")
    figure.tight_layout()
    figure.savefig(path)
    print(f"wrote {path}")
    for h in points:
        if h["reason"] == "epoch":
            print(
                f"epoch {h['epoch']:>2}  {h['seconds'] / 60:5.2f} min  train {h['train']:.4f}  "
                f"val {h['val']:.4f} nats/char"
            )
        else:
            print(
                f"{h['reason']:<8}  {h['seconds'] / 60:5.2f} min  step {h['step']}  "
                f"val {h['val']:.4f} nats/char"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--out", default="runs/quality", help="run directory")
    parser.add_argument("--plot", default=os.path.join(HERE, "quality_curve.png"), help="PNG path")
    parser.add_argument("--plot-only", action="store_true", help="plot an existing run")
    parser.add_argument(
        "train_args", nargs=argparse.REMAINDER, help="extra flags for textgen.train, after --"
    )
    args = parser.parse_args()
    if not args.plot_only:
        command = [
            sys.executable,
            "-m",
            "textgen.train",
            "--max-minutes",
            str(args.minutes),
            "--out",
            args.out,
        ] + [a for a in args.train_args if a != "--"]
        print(" ".join(command[1:]))
        subprocess.run(command, check=True)
    plot(args.out, args.plot)


if __name__ == "__main__":
    main()
