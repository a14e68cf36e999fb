"""Fine-tuning against training from scratch, at equal wall-clock budgets, on a folder of
documents.

    .venv/bin/python bench/fine_tune.py                       # 2 and 5 minutes, both arms
    .venv/bin/python bench/fine_tune.py --plot-only           # plot and tabulate earlier runs

The corpus is the BSD fortune collection in ../shared/data/fortunes (12 category files,
entries between `%` lines, about 1.6 MB), read as documents (`--document-boundary
separator:%`), 10% of them held out (`--val-fraction 0.1`, the same seeded choice in every
run). For each budget it trains

- scratch: `python -m textgen.train` with the defaults;
- fine-tune: the same with `--init-from bundled`, the bundled tiny-shakespeare model, its
  vocabulary merged with the fortunes' and its default fine-tuning learning rate;

one after the other (never side by side: each gets both cores), and reports the held-out loss
(nats/char) of each run's best evaluation, and the curves of the longest budget in
bench/fine_tune_curve.png. Then it samples five whole documents from the fine-tuned run of the
longest budget (`textgen.sample --documents 5`). The plot needs matplotlib
(`pip install -e '.[bench]'`).
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from host import describe_host  # noqa: E402

from textgen.training.metrics_log import FILE, evaluations, read_rows  # noqa: E402

DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "fortunes"))
ARMS = {"scratch": [], "fine-tune": ["--init-from", "bundled"]}


def train_command(data, minutes, out, extra, eval_every):
    return [
        sys.executable,
        "-m",
        "textgen.train",
        "--data",
        data,
        "--document-boundary",
        "separator:%",
        "--val-fraction",
        "0.1",
        "--max-minutes",
        str(minutes),
        "--eval-every",
        str(eval_every),
        "--sample-every",
        "0",
        "--no-export",
        "--no-progress",
        "--out",
        out,
        *extra,
    ]


def run_name(arm, minutes):
    return f"{arm}_{minutes:g}min"


def curve(run):
    """[(minutes, held-out nats/char)] of every evaluation of `run`."""
    rows = read_rows(os.path.join(run, FILE))
    return [(row["seconds"] / 60, row["val"]) for row in evaluations(rows)]


def best(run):
    return min(val for _, val in curve(run))


def plot(out, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    longest = max(budgets)
    for arm, color in zip(ARMS, ("tab:blue", "tab:red")):
        points = curve(os.path.join(out, run_name(arm, longest)))
        axes.plot(*zip(*points), "o-", color=color, label=f"{arm}, {longest:g}-minute run")
        for minutes in budgets:
            if minutes != longest:
                shorter = curve(os.path.join(out, run_name(arm, minutes)))
                axes.plot(
                    *zip(*shorter),
                    "x--",
                    color=color,
                    alpha=0.6,
                    label=f"{arm}, {minutes:g}-minute run",
                )
    axes.set_xlabel("training time (minutes)")
    axes.set_ylabel("held-out fortunes (nats/char)")
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("fortunes: fine-tuning the bundled model against training from scratch")
    figure.tight_layout()
    figure.savefig(path)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DATA, help="the fortunes folder")
    parser.add_argument("--budgets", default="2,5", help="minutes per run, comma-separated")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations")
    parser.add_argument("--out", default="runs/fine_tune", help="where the runs go")
    parser.add_argument("--plot", default=os.path.join(HERE, "fine_tune_curve.png"))
    parser.add_argument("--plot-only", action="store_true", help="tabulate and plot earlier runs")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    print(describe_host())
    if not args.plot_only:
        if not os.path.isdir(args.data):
            sys.exit(f"error: {args.data} is not a folder; pass --data with the fortunes folder")
        for minutes in budgets:
            for arm, extra in ARMS.items():
                out = os.path.join(args.out, run_name(arm, minutes))
                command = train_command(args.data, minutes, out, extra, args.eval_every)
                print(" ".join(command[1:]), flush=True)
                subprocess.run(command, check=True, cwd=ROOT)
    print("\n| budget | scratch (nats/char) | fine-tune (nats/char) | difference |")
    print("|---|---|---|---|")
    for minutes in budgets:
        scratch, tuned = (best(os.path.join(args.out, run_name(arm, minutes))) for arm in ARMS)
        print(f"| {minutes:g} min | {scratch:.4f} | {tuned:.4f} | {tuned - scratch:+.4f} |")
    scratch_longest = best(os.path.join(args.out, run_name("scratch", max(budgets))))
    tuned_shortest = best(os.path.join(args.out, run_name("fine-tune", min(budgets))))
    print(
        f"fine-tune at {min(budgets):g} min {tuned_shortest:.4f} against scratch at "
        f"{max(budgets):g} min {scratch_longest:.4f}: "
        + ("reached" if tuned_shortest <= scratch_longest else "not reached")
    )
    try:
        plot(args.out, budgets, args.plot)
    except ImportError:
        print("no matplotlib: no plot (pip install -e '.[bench]')")
    tuned = os.path.join(args.out, run_name("fine-tune", max(budgets)))
    command = [sys.executable, "-m", "textgen.sample", tuned, "--documents", "5", "--seed", "1"]
    print("\n" + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
