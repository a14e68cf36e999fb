"""Quality benchmark: the default training command under a time budget, and its loss curve.

    .venv/bin/python bench/quality.py --minutes 10 --out runs/quality
    .venv/bin/python bench/quality.py --plot-only --out runs/quality
    .venv/bin/python bench/quality.py --compare-precision --minutes 10 --out runs/precision
    .venv/bin/python bench/quality.py --curves runs/a=A runs/b=B --plot bench/defaults_curves.png

Trains with the default configuration (`python -m textgen.train --max-minutes 10`) on the
embedded tiny-shakespeare, then plots training and validation loss (nats/char) against
training time to bench/quality_curve.png and prints the final validation loss. The plot needs
matplotlib (`pip install -e '.[bench]'`).

`--compare-precision` is the bfloat16 quality check (issue 28), four runs one after the other
on the same seed, each with the defaults otherwise:
1. float32, `--max-minutes M`: the float32 default's step count S in M minutes;
2. float32 and 3. bfloat16, `--max-steps S` each: equal steps (and so the same learning-rate
   schedule, which follows the steps), the difference in validation loss is the precision's;
4. bfloat16, `--max-minutes M`: equal wall-clock.
It prints the host, each run's steps, time, kernel and final validation nats/char, and whether
bfloat16 ends within 0.01 nats/char of float32 at equal steps and below it at equal time.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

# bfloat16 may lose at most this much validation loss to float32 at equal steps (nats/char).
PRECISION_TOLERANCE = 0.01


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


KERNELS = {}  # run directory -> the run's "recurrent kernel:" line


def train(out, extra):
    """Runs textgen.train, its output passed through; keeps its kernel line. A run that already
    finished there (an earlier, interrupted comparison) is kept, not trained again."""
    if os.path.exists(os.path.join(out, "checkpoint.npz")):
        print(f"{out}: finished earlier, kept", flush=True)
        return
    command = [sys.executable, "-m", "textgen.train", "--out", out, *extra]
    print(" ".join(command[1:]), flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith("recurrent kernel:"):
            KERNELS[out] = line.strip()
    if process.wait():
        raise SystemExit(f"error: {' '.join(command[1:])} failed ({process.returncode})")


def run_summary(run):
    """(steps, minutes, final validation nats/char, kernel line) of a finished run."""
    from textgen.training.metrics_log import FILE, evaluations, read_rows

    last = evaluations(read_rows(os.path.join(run, FILE)))[-1]
    return last["step"], last["seconds"] / 60, last["val"], KERNELS.get(run, "")


def compare_precision(args, extra):
    from host import describe_host

    print(describe_host(), flush=True)
    runs = {
        name: os.path.join(args.out, name)
        for name in ("f32-time", "f32-steps", "bf16-steps", "bf16-time")
    }
    minutes = ["--max-minutes", str(args.minutes)]
    train(runs["f32-time"], ["--precision", "float32", *minutes, *extra])
    steps = run_summary(runs["f32-time"])[0]
    budget = ["--max-steps", str(steps)]
    train(runs["bf16-steps"], ["--precision", "bfloat16", *budget, *extra])
    train(runs["f32-steps"], ["--precision", "float32", *budget, *extra])
    train(runs["bf16-time"], ["--precision", "bfloat16", *minutes, *extra])
    results = {name: run_summary(path) for name, path in runs.items()}
    print(f"\n{'run':<12}{'steps':>8}{'minutes':>9}{'val nats/char':>15}")
    for name, (run_steps, run_minutes, val, _) in results.items():
        print(f"{name:<12}{run_steps:>8}{run_minutes:>9.2f}{val:>15.4f}")
    for name, (*_, kernel) in results.items():
        print(f"{name}: {kernel}")
    equal_steps = results["bf16-steps"][2] - results["f32-steps"][2]
    equal_time = results["bf16-time"][2] - results["f32-time"][2]
    verdict = "met" if equal_steps <= PRECISION_TOLERANCE else "NOT met"
    print(
        f"\nequal steps ({steps}): bf16 - float32 = {equal_steps:+.4f} nats/char "
        f"(target <= {PRECISION_TOLERANCE}: {verdict})"
    )
    print(
        f"equal time ({args.minutes:g} min): bf16 - float32 = {equal_time:+.4f} nats/char "
        f"(target < 0: {'met' if equal_time < 0 else 'NOT met'})"
    )
    with open(os.path.join(args.out, "precision.json"), "w", encoding="utf-8") as file:
        json.dump({"host": describe_host(), "runs": results}, file, indent=1)


def plot_curves(runs, path):
    """The validation curves of several runs (RUN=LABEL each) against training time, one PNG;
    prints each run's steps, best and final validation nats/char."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textgen.training.metrics_log import FILE, evaluations, read_rows

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    print(f"{'run':<40}{'steps':>7}{'best val':>10}{'final val':>11}{'final train':>13}")
    for spec in runs:
        run, _, label = spec.partition("=")
        points = evaluations(read_rows(os.path.join(run, FILE)))
        minutes = [p["seconds"] / 60 for p in points]
        values = [p["val"] for p in points]
        axes.plot(minutes, values, "o-", markersize=3, label=label or run)
        train = [p["train"] for p in points if p.get("train") is not None]
        print(
            f"{label or run:<40}{points[-1]['step']:>7}{min(values):>10.4f}{values[-1]:>11.4f}"
            + (f"{train[-1]:>13.4f}" if train else "")
        )
    axes.axhline(1.42, color="gray", linestyle=":", label="target 1.42")
    axes.set_xlabel("training time (minutes, 2-core CPU)")
    axes.set_ylabel("validation loss (nats/char)")
    axes.set_ylim(1.38, 1.7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title("tiny-shakespeare, 10 minutes: candidate defaults")
    figure.tight_layout()
    figure.savefig(path)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--out", default="runs/quality", help="run directory")
    parser.add_argument("--plot", default=os.path.join(HERE, "quality_curve.png"), help="PNG path")
    parser.add_argument("--plot-only", action="store_true", help="plot an existing run")
    parser.add_argument(
        "--curves", nargs="+", metavar="RUN=LABEL", help="plot finished runs' validation curves"
    )
    parser.add_argument(
        "--compare-precision",
        action="store_true",
        help="the bfloat16 quality check: float32 and bfloat16 at equal steps and equal time",
    )
    parser.add_argument(
        "train_args", nargs=argparse.REMAINDER, help="extra flags for textgen.train, after --"
    )
    args = parser.parse_args()
    if args.curves:
        plot_curves(args.curves, args.plot)
        return
    if args.compare_precision:
        compare_precision(args, [a for a in args.train_args if a != "--"])
        return
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
