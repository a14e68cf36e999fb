"""Caption quality on the synthetic shapes data: generate, train for a time budget, score.

    python bench/caption_quality.py [--out DIR] [--max-minutes 15] [--train-size 5000]
                                    [--val-size 500] [--reuse-data] [-- EXTRA TRAIN FLAGS]

1. `python -m captioning.shapes --out DIR/data --train-size 5000 --val-size 500` (skipped with
   --reuse-data when DIR/data already holds those sizes);
2. `python -m captioning.train` on it with the default (`small`) encoder and decoder,
   `--max-minutes 15` and `--first-captions 1 --captions-per-image 1`: it trains on each scene's
   first caption, the generator's canonical wording, rather than on all five wordings (a model
   that must also learn the four paraphrases, some in the reverse order, scored 80-84% instead
   of 96-97%); the clock includes reading the captions and decoding the images;
3. reports, on the validation images, the share whose greedy caption names every object's colour,
   size and shape and the relation correctly (`captioning.metrics.scene_parser.caption_is_correct`;
   target
   >= 95%), BLEU-4 and CIDEr (pycocoevalcap) against all five references, read from the run's
   eval.json; also written to DIR/quality.json.

Anything after `--` is passed to `captioning.train` after those flags, so it can override them
(e.g. `-- --hidden-size 384`, or `-- --first-captions 0 --captions-per-image 2` to train on every
wording).

--scst: self-critical training against cross-entropy alone in the same wall-clock budget. Two
runs on the same data: "xe" trains --max-minutes with cross-entropy; "scst" trains
--max-minutes minus --scst-minutes with cross-entropy (its own full schedule), then is resumed
with `--scst-after <the epoch it stopped in>` for --scst-minutes of self-critical training on
CIDEr-D (the resumed run reads and decodes the data again: its clock counts that too). The two
run side by side, so that other work on the machine slows both alike. Both are scored the same
way; the report goes to DIR/quality_scst.json. --max-objects 4 generates the
harder set (up to four shapes, six colours, three sizes); give each set its own --out.

    python bench/caption_quality.py --scst --max-minutes 6 --scst-minutes 2 --out runs/q3
    python bench/caption_quality.py --scst --max-minutes 6 --scst-minutes 2 --max-objects 4 \
        --out runs/q4

--scst --continue-from RUN_DIR: the effect of self-critical training alone, from one trained
model. Two copies of RUN_DIR (e.g. runs/q3/xe) are resumed side by side for --scst-minutes, one
with self-critical training, one with cross-entropy at the same constant learning rate
(--scst-learning-rate's default, 2e-4), and both are scored (DIR/quality_continue.json).
"""

import argparse
import json
import os
import subprocess
import sys
import time

TARGET = 0.95
# The shapes data's first caption of every scene is its canonical wording (captioning.shapes).
TRAIN_FLAGS = ["--first-captions", "1", "--captions-per-image", "1"]


def run(command):
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def data_ready(data, train_size, val_size):
    try:
        for split, size in (("train", train_size), ("val", val_size)):
            with open(
                os.path.join(data, "annotations", f"captions_{split}.json"), encoding="utf-8"
            ) as f:
                if len(json.load(f)["images"]) != size:
                    return False
    except (OSError, ValueError, KeyError):
        return False
    return True


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default="runs/caption_quality",
        help="directory for data/, run/ and quality.json (default: runs/caption_quality)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=15.0, help="training budget in minutes (default: 15)"
    )
    parser.add_argument(
        "--train-size", type=int, default=5000, help="training scenes (default: 5000)"
    )
    parser.add_argument(
        "--val-size", type=int, default=500, help="validation scenes (default: 500)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the data and of training (default: 0)"
    )
    parser.add_argument(
        "--reuse-data", action="store_true", help="keep OUT/data if it already holds these sizes"
    )
    parser.add_argument(
        "--max-objects",
        type=int,
        default=3,
        help="shapes per scene, up to (4: the harder set; default: 3)",
    )
    parser.add_argument(
        "--scst",
        action="store_true",
        help="compare cross-entropy then self-critical training with cross-entropy alone",
    )
    parser.add_argument(
        "--scst-minutes",
        type=float,
        default=5.0,
        help="--scst: the minutes of the budget spent on self-critical training (default: 5)",
    )
    parser.add_argument(
        "--continue-from",
        default="",
        metavar="RUN_DIR",
        help="--scst: continue this trained run both ways instead of training from scratch",
    )
    args = parser.parse_args(argv)
    if args.continue_from:
        return continue_both_ways(args, extra)
    if args.scst and not 0 < args.scst_minutes < args.max_minutes:
        parser.error("--scst-minutes must be above 0 and below --max-minutes")

    data = os.path.join(args.out, "data")
    run_dir = os.path.join(args.out, "run")
    python = sys.executable
    if not (args.reuse_data and data_ready(data, args.train_size, args.val_size)):
        run(
            [
                python,
                "-m",
                "captioning.shapes",
                "--out",
                data,
                "--train-size",
                str(args.train_size),
                "--val-size",
                str(args.val_size),
                "--seed",
                str(args.seed),
                "--max-objects",
                str(args.max_objects),
            ]
        )
    if args.max_objects == 4:
        # Four-object captions run to 23 tokens and some references to 28.
        extra = ["--max-length", "32", *extra]
    if args.scst:
        return compare_scst(args, data, extra)
    if os.path.exists(run_dir):
        import shutil

        shutil.rmtree(run_dir)
    started = time.monotonic()
    run(train_command(args, data, run_dir, args.max_minutes, extra, quiet=False))
    seconds = time.monotonic() - started

    with open(os.path.join(run_dir, "eval.json"), encoding="utf-8") as f:
        evaluation = json.load(f)
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    scores = evaluation["scores"]
    wrong = [c for c in evaluation["captions"] if not c["correct"]]
    report = {
        "scores": scores,
        "target": TARGET,
        "met": scores["correct"] >= TARGET,
        "global_step": evaluation["global_step"],
        "wall_seconds": round(seconds, 1),
        "cpu_count": os.cpu_count(),
        "config": config,
    }
    with open(os.path.join(args.out, "quality.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)

    print(
        f"\nvalidation ({scores['images']} images), greedy captions after "
        f"{evaluation['global_step']} steps, {seconds / 60:.1f} min in all:"
    )
    print(
        f"  correct (every object's colour, size, shape and the relation): "
        f"{scores['correct']:.1%}  "
        f"(target {TARGET:.0%}: {'met' if report['met'] else 'NOT met'})"
    )
    print(f"  BLEU-4 {scores['bleu4']:.3f}   CIDEr {scores['cider']:.3f}")
    for example in wrong[:5]:
        print(f"  wrong: {example['caption']!r}  (reference: {example['references'][0]!r})")
    print(f"report: {os.path.join(args.out, 'quality.json')}")
    return 0


def train_command(args, data, run_dir, minutes, extra, quiet=True):
    """The captioning.train command of one benchmark run; `quiet` drops the progress bar and the
    export (the --scst arms)."""
    return [
        sys.executable,
        "-m",
        "captioning.train",
        "--annotations",
        os.path.join(data, "annotations", "captions_train.json"),
        "--val-annotations",
        os.path.join(data, "annotations", "captions_val.json"),
        "--images",
        os.path.join(data, "images"),
        "--out",
        run_dir,
        "--max-minutes",
        str(minutes),
        "--epochs",
        "1000",
        "--seed",
        str(args.seed),
        "--eval-images",
        str(args.val_size),
        *(["--no-progress", "--no-export"] if quiet else []),
        *TRAIN_FLAGS,
        *extra,
    ]


def run_scores(run_dir, seconds):
    with open(os.path.join(run_dir, "eval.json"), encoding="utf-8") as f:
        evaluation = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    steps = [r for r in rows if r["kind"] == "step"]
    scst = [r for r in steps if "scst_sample_reward" in r]
    report = {
        "scores": evaluation["scores"],
        "global_step": evaluation["global_step"],
        "wall_seconds": round(seconds, 1),
        "scst_steps": len(scst),
    }
    if scst:
        first, last = scst[: max(1, len(scst) // 10)], scst[-max(1, len(scst) // 10) :]
        for name in ("scst_sample_reward", "scst_greedy_reward", "scst_beat_baseline"):
            report[name + "_first_tenth"] = sum(r[name] for r in first) / len(first)
            report[name + "_last_tenth"] = sum(r[name] for r in last) / len(last)
        report["scst_reward_ms"] = sum(r["scst_reward_ms"] for r in scst) / len(scst)
    return report


def compare_scst(args, data, extra):
    """The two runs of --scst and their report."""
    import shutil

    # The two runs train at the same time, so that a machine shared with other work slows both
    # alike; each gets about half of the cores.
    xe_dir, scst_dir = (os.path.join(args.out, name) for name in ("xe", "scst"))
    for run_dir in (xe_dir, scst_dir):
        if os.path.exists(run_dir):
            shutil.rmtree(run_dir)
    started = time.monotonic()
    xe_command = train_command(args, data, xe_dir, args.max_minutes, extra)
    print("$ " + " ".join(xe_command) + " &", flush=True)
    with open(os.path.join(args.out, "xe.log"), "w", encoding="utf-8") as xe_log:
        xe = subprocess.Popen(xe_command, stdout=xe_log, stderr=subprocess.STDOUT)
        first = args.max_minutes - args.scst_minutes
        run(train_command(args, data, scst_dir, first, [*extra, "--eval-images", "0"]))
        with open(os.path.join(scst_dir, "metrics.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        epoch = [r for r in rows if r["kind"] == "step"][-1]["epoch"]
        resumed = train_command(args, data, scst_dir, args.scst_minutes, extra)
        run([*resumed, "--resume", "--scst-after", str(epoch)])
        scst_seconds = time.monotonic() - started
        if xe.wait() != 0:
            raise SystemExit(f"the cross-entropy run failed; see {xe_log.name}")
    runs = {
        "xe": run_scores(xe_dir, time.monotonic() - started),
        "scst": run_scores(scst_dir, scst_seconds),
    }
    report = {
        "max_objects": args.max_objects,
        "max_minutes": args.max_minutes,
        "scst_minutes": args.scst_minutes,
        "runs": runs,
        "cpu_count": os.cpu_count(),
    }
    with open(os.path.join(args.out, "quality_scst.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"\n{args.max_objects}-object set, {args.val_size} validation images, greedy captions:")
    for name, result in runs.items():
        s = result["scores"]
        print(
            f"  {name:4s} {result['global_step']:6d} steps ({result['scst_steps']} SCST), "
            f"{result['wall_seconds'] / 60:.1f} min: correct {s['correct']:.1%}  "
            f"BLEU-4 {s['bleu4']:.3f}  CIDEr {s['cider']:.3f}"
        )
    print(f"report: {os.path.join(args.out, 'quality_scst.json')}")
    return 0


def continue_both_ways(args, extra):
    """--continue-from: the same trained run resumed with SCST and with cross-entropy."""
    import shutil

    with open(os.path.join(args.continue_from, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with open(os.path.join(args.continue_from, "metrics.jsonl"), encoding="utf-8") as f:
        epoch = [json.loads(line) for line in f if '"kind": "step"' in line][-1]["epoch"]
    base = [
        sys.executable,
        "-m",
        "captioning.train",
        "--annotations",
        config["annotations"],
        "--images",
        config["images"],
        "--resume",
        "--max-minutes",
        str(args.scst_minutes),
        "--no-progress",
        *extra,
    ]
    flags = {
        "scst": ["--scst-after", str(epoch)],
        "xe": ["--learning-rate", "2e-4", "--lr-schedule", "constant"],
    }
    processes, started = {}, time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    for name in ("xe", "scst"):
        run_dir = os.path.join(args.out, f"continue_{name}")
        if os.path.exists(run_dir):
            shutil.rmtree(run_dir)
        shutil.copytree(args.continue_from, run_dir)
        command = [*base, "--out", run_dir, *flags[name]]
        print("$ " + " ".join(command) + " &", flush=True)
        log = open(os.path.join(args.out, f"continue_{name}.log"), "w", encoding="utf-8")
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    runs = {}
    for name, (process, log) in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"the {name} run failed; see {log.name}")
        log.close()
        runs[name] = run_scores(
            os.path.join(args.out, f"continue_{name}"), time.monotonic() - started
        )
    with open(os.path.join(args.continue_from, "eval.json"), encoding="utf-8") as f:
        before = json.load(f)
    report = {"from": args.continue_from, "before": before["scores"], "minutes": args.scst_minutes}
    report["runs"] = runs
    with open(os.path.join(args.out, "quality_continue.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    b = before["scores"]
    print(
        f"\nfrom {args.continue_from} (step {before['global_step']}): correct "
        f"{b['correct']:.1%}  BLEU-4 {b['bleu4']:.3f}  CIDEr {b['cider']:.3f}; then "
        f"{args.scst_minutes} min:"
    )
    for name, result in runs.items():
        s = result["scores"]
        print(
            f"  {name:4s} {result['global_step']:6d} steps: correct {s['correct']:.1%}  "
            f"BLEU-4 {s['bleu4']:.3f}  CIDEr {s['cider']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
