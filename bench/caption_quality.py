"""Caption quality on the synthetic shapes data: generate, train for a time budget, score.

    python bench/caption_quality.py [--out DIR] [--max-minutes 15] [--train-size 5000]
                                    [--val-size 500] [--reuse-data] [--max-objects 3|4]
                                    [--references canonical|varied] [--scst ...]
                                    [-- EXTRA TRAIN FLAGS]

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

--references varied (with --scst): the same scenes with references that disagree as COCO's
annotators do (`captioning.shapes --references varied`: reference 0 canonical, references 1-4
each naming some of the shapes in their own words, order and length), generated into
DIR/data-varied (DIR/data stays the canonical set; --reuse-data checks the style recorded in the
annotation files' `info`). Both arms then train on every reference (`--first-captions 0
--captions-per-image 2` instead of `--first-captions 1 --captions-per-image 1`): this is the
COCO situation SCST was made for, where cross-entropy learns an average of five annotators and
self-critical training moves the model towards the n-grams most references share (CIDEr-D's
consensus). Trained on reference 0 alone, the cross-entropy model would already say the canonical
description and the varied references would only change the scoring, not the learning problem.
Reported on the DIR/data-varied validation scenes for each arm, printed as tables and written to
DIR/quality_varied.json (the host first):
- greedy captions: correctness (`caption_is_correct`; on varied data it means "says everything",
  which reference 0 does and most others do not), BLEU-4, METEOR, ROUGE-L and CIDEr
  (pycocoevalcap with the PTB tokenizer, as `captioning.evaluate` scores; METEOR needs Java), and
  SCST's CIDEr relative to cross-entropy's, with the target of +5% (PASS/FAIL);
- the SCST phase's rewards from the scst run's metrics.jsonl (one row a step: the samples' and
  the greedy captions' CIDEr-D on the training batch, the share of samples beating the
  baseline), over the phase, its first and last tenth, and the spread of the per-step means;
- the per-sample reward spread, which the log does not hold, probed on the validation scenes
  with each arm's final model: 5 captions sampled per image as SCST samples them (temperature
  1) and the greedy one, scored with CIDEr-D;
- the decoding controls (`captioning.evaluate`'s options, through the `caption_files` it calls):
  greedy and beam 3, with and without `--length-penalty 1.0`, `--length-normalization 1.0`,
  `--block-repeat-ngrams 3 --bad-endings`: correctness, BLEU-4, CIDEr, mean length, and the
  shares of captions with a bigram or trigram twice and ending on a word of
  `captioning.datasets.tokens.BAD_ENDINGS`; the captions go to DIR/decoding/ARM_*.json (COCO
  results files).

    python bench/caption_quality.py --scst --max-minutes 15 --scst-minutes 5 --max-objects 4 \
        --references varied --out runs/q4varied

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from host import describe_host  # noqa: E402

TARGET = 0.95
# --scst with --references varied: SCST's CIDEr over cross-entropy alone, relative.
SCST_CIDER_TARGET = 0.05
# The captions each reference style trains on (see the module doc): the shapes data's first
# caption of every scene is its canonical wording (captioning.shapes); with varied references
# every reference, two per image in a batch (captioning.train's default, neuraltalk2's
# seq_per_img).
TRAIN_FLAGS = {
    "canonical": ["--first-captions", "1", "--captions-per-image", "1"],
    "varied": ["--first-captions", "0", "--captions-per-image", "2"],
}
# The decodings compared on each --scst arm's model (captioning.evaluate's options).
DECODINGS = (
    ("greedy", {"beam_size": 1}),
    (
        "greedy, block 3-grams + bad endings",
        {"beam_size": 1, "block_repeat_ngrams": 3, "bad_endings": True},
    ),
    ("beam 3", {"beam_size": 3}),
    ("beam 3, length penalty 1.0", {"beam_size": 3, "length_penalty": 1.0}),
    ("beam 3, length normalization 1.0", {"beam_size": 3, "length_normalization": 1.0}),
    (
        "beam 3, block 3-grams + bad endings",
        {"beam_size": 3, "block_repeat_ngrams": 3, "bad_endings": True},
    ),
)
# Captions sampled per validation image (temperature 1, as SCST samples) for the reward probe.
PROBE_SAMPLES = 5


def run(command):
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def data_ready(data, train_size, val_size, references="canonical", seed=None):
    """Whether DIR/data already holds a set of these sizes and reference style (the annotation
    files' `info` says "references": "varied" only for varied references) and seed."""
    try:
        for split, size in (("train", train_size), ("val", val_size)):
            with open(
                os.path.join(data, "annotations", f"captions_{split}.json"), encoding="utf-8"
            ) as f:
                document = json.load(f)
            info = document.get("info") or {}
            if len(document["images"]) != size:
                return False
            if info.get("references", "canonical") != references:
                return False
            if seed is not None and info.get("seed", seed) != seed:
                return False
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    return True


def data_directory(out, references):
    """OUT/data, or OUT/data-varied: each reference style its own set."""
    return os.path.join(out, "data" if references == "canonical" else f"data-{references}")


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
    parser.add_argument(
        "--references",
        choices=sorted(TRAIN_FLAGS),
        default="canonical",
        help="the shapes data's references (captioning.shapes --references): canonical "
        "(trained on the canonical first caption) or varied (COCO-like, trained on all five); "
        "default: canonical",
    )
    args = parser.parse_args(argv)
    print(describe_host(), flush=True)
    if args.continue_from:
        return continue_both_ways(args, extra)
    if args.scst and not 0 < args.scst_minutes < args.max_minutes:
        parser.error("--scst-minutes must be above 0 and below --max-minutes")

    data = data_directory(args.out, args.references)
    run_dir = os.path.join(args.out, "run")
    python = sys.executable
    if not (
        args.reuse_data
        and data_ready(data, args.train_size, args.val_size, args.references, args.seed)
    ):
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
                "--references",
                args.references,
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
        *TRAIN_FLAGS[args.references],
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
        report.update(reward_log(scst))
    return report


def reward_log(scst):
    """The SCST phase's reward statistics from its metrics-log step rows (one row a step, each
    the means over that step's batch): CIDEr-D of the samples and of the greedy captions (on the
    training images), the share of samples that beat their baseline, over the whole phase and its
    first and last tenth, and the spread of the per-step means (the log holds no per-sample
    rewards: `reward_probe` measures those)."""
    import numpy as np

    tenth = max(1, len(scst) // 10)
    report = {}
    for name in ("scst_sample_reward", "scst_greedy_reward", "scst_beat_baseline"):
        values = np.array([r[name] for r in scst], np.float64)
        report[name] = float(values.mean())
        report[name + "_first_tenth"] = float(values[:tenth].mean())
        report[name + "_last_tenth"] = float(values[-tenth:].mean())
        report[name + "_step_std"] = float(values.std())
    advantage = np.array(
        [r["scst_sample_reward"] - r["scst_greedy_reward"] for r in scst], np.float64
    )
    report["scst_advantage"] = float(advantage.mean())
    report["scst_advantage_step_std"] = float(advantage.std())
    report["scst_reward_ms"] = sum(r["scst_reward_ms"] for r in scst) / len(scst)
    return report


def caption_statistics(captions):
    """Mean length in tokens (`captioning.datasets.tokens.tokenize`: words and punctuation) and
    the shares of captions holding a bigram twice, a trigram twice, either, and ending on a word
    of `BAD_ENDINGS`."""
    from captioning.datasets.tokens import BAD_ENDINGS, tokenize

    def repeats(tokens, n):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return len(grams) != len(set(grams))

    tokenized = [tokenize(c) for c in captions]
    count = max(1, len(tokenized))
    bigram = [repeats(t, 2) for t in tokenized]
    trigram = [repeats(t, 3) for t in tokenized]
    return {
        "mean_length": sum(map(len, tokenized)) / count,
        "repeated_bigram": sum(bigram) / count,
        "repeated_trigram": sum(trigram) / count,
        "repeated_ngram": sum(b or t for b, t in zip(bigram, trigram)) / count,
        "bad_ending": sum(bool(t) and t[-1] in BAD_ENDINGS for t in tokenized) / count,
    }


def caption_records(model, records, options):
    """{image_id: caption} of every record (`caption_files`, what captioning.evaluate calls)."""
    from captioning.inference.loading import caption_files

    def on_error(error):
        raise SystemExit(f"image {error} could not be read")

    results = caption_files([r.path for r in records], model, options, 32, on_error)
    return {r.image_id: result.caption for r, result in zip(records, results)}


def decode_arm(run_dir, records, max_length, out_dir, name):
    """Every decoding of DECODINGS with the model of `run_dir` on `records`: correctness,
    COCO metrics (pycocoevalcap, as captioning.evaluate scores), caption statistics; the
    captions go to OUT_DIR/NAME_<decoding>.json as COCO results files."""
    from captioning.inference.loading import DecodeOptions, load_caption_model
    from captioning.metrics.coco_metrics import coco_metrics, correct_share

    model = load_caption_model(run_dir)
    os.makedirs(out_dir, exist_ok=True)
    report = {}
    for label, settings in DECODINGS:
        started = time.monotonic()
        captions = caption_records(model, records, DecodeOptions(max_length=max_length, **settings))
        seconds = time.monotonic() - started
        slug = label.replace(", ", "_").replace(" + ", "+").replace(" ", "-")
        path = os.path.join(out_dir, f"{name}_{slug}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump([{"image_id": i, "caption": c} for i, c in captions.items()], f, indent=1)
        ordered = [captions[r.image_id] for r in records]
        entry = {
            "options": settings,
            "results": path,
            "decode_seconds": round(seconds, 1),
            "correct": correct_share(ordered, [r.scene for r in records]),
            **coco_metrics({r.image_id: r.captions for r in records}, captions),
            **caption_statistics(ordered),
        }
        report[label] = entry
        print(
            f"  {name} {label}: correct {entry['correct']:.1%}  CIDEr {entry['CIDEr']:.3f}  "
            f"length {entry['mean_length']:.1f}  ({seconds:.0f} s)",
            flush=True,
        )
    return model, report


def reward_probe(model, records, max_length, greedy, end_token):
    """The per-sample rewards that the metrics log does not hold, measured on the validation
    images with the arm's final model: PROBE_SAMPLES captions per image sampled as SCST samples
    (temperature 1, no top-k; seeds 1..K) and the greedy caption, each scored with CIDEr-D
    (`captioning.metrics.cider_d.CiderD`, document frequencies of the validation references;
    <end> scored as a word when the run did) against the image's references."""
    import numpy as np

    from captioning.datasets.tokens import END, tokenize
    from captioning.inference.loading import DecodeOptions
    from captioning.metrics.cider_d import CiderD

    tail = [END] if end_token else []
    scorer = CiderD([[tokenize(r) + tail for r in record.captions] for record in records])

    def rewards(captions):
        texts = [" ".join(tokenize(captions[r.image_id]) + tail) for r in records]
        return scorer.score_text(texts, np.arange(len(records)))

    greedy_reward = rewards(greedy)
    samples, same = [], []
    for seed in range(1, PROBE_SAMPLES + 1):
        options = DecodeOptions(max_length=max_length, temperature=1.0, top_k=0, seed=seed)
        drawn = caption_records(model, records, options)
        samples.append(rewards(drawn))
        same.append([drawn[r.image_id] == greedy[r.image_id] for r in records])
    sample = np.stack(samples, axis=1)  # [images, K]
    others = (sample.sum(axis=1, keepdims=True) - sample) / (PROBE_SAMPLES - 1)
    advantage = sample - greedy_reward[:, None]
    return {
        "samples_per_image": PROBE_SAMPLES,
        "greedy_reward": float(greedy_reward.mean()),
        "sample_reward": float(sample.mean()),
        "sample_reward_std": float(sample.std()),
        "within_image_std": float(sample.std(axis=1).mean()),
        "advantage_std": float(advantage.std()),
        "beat_greedy": float((advantage > 0).mean()),
        "below_greedy": float((advantage < 0).mean()),
        "beat_mean_of_others": float((sample > others).mean()),
        "same_as_greedy": float(np.mean(same)),
    }


def percent(value):
    return f"{value:+.1%}"


def varied_report(args, data, runs, extra):
    """--scst: every figure of both arms on the validation scenes (the greedy captions' COCO
    metrics and correctness, the SCST target, the reward statistics, the decoding controls),
    printed as tables and returned for the JSON report."""
    from captioning.coco_data import read_captions

    val = os.path.join(data, "annotations", "captions_val.json")
    records = read_captions(val, os.path.join(data, "images"))[: args.val_size]
    out_dir = os.path.join(args.out, "decoding")
    end_token = "--no-scst-end-token" not in extra
    for name, result in runs.items():
        with open(os.path.join(args.out, name, "config.json"), encoding="utf-8") as f:
            max_length = json.load(f)["max_length"]
        model, result["decoding"] = decode_arm(
            os.path.join(args.out, name), records, max_length, out_dir, name
        )
        with open(result["decoding"]["greedy"]["results"], encoding="utf-8") as f:
            greedy = {e["image_id"]: e["caption"] for e in json.load(f)}
        result["reward_probe"] = reward_probe(model, records, max_length, greedy, end_token)
    xe, scst = (runs[name]["decoding"]["greedy"]["CIDEr"] for name in ("xe", "scst"))
    change = scst / xe - 1.0
    summary = {"cider_change": change, "target": SCST_CIDER_TARGET}
    summary["met"] = change >= SCST_CIDER_TARGET

    print(
        f"\n{args.max_objects}-object set, {args.references} references, {len(records)} "
        "validation scenes, greedy captions (COCO metrics: pycocoevalcap, PTB tokenizer):\n"
    )
    print("| arm | steps (SCST) | minutes | correct | BLEU-4 | METEOR | ROUGE-L | CIDEr |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in runs.items():
        g = result["decoding"]["greedy"]
        print(
            f"| {name} | {result['global_step']:,} ({result['scst_steps']:,}) | "
            f"{result['wall_seconds'] / 60:.1f} | {g['correct']:.1%} | {g['Bleu_4']:.3f} | "
            f"{g.get('METEOR', float('nan')):.3f} | {g['ROUGE_L']:.3f} | {g['CIDEr']:.3f} |"
        )
    print(
        f"\nSCST over cross-entropy: CIDEr {percent(change)} (target >= "
        f"{percent(SCST_CIDER_TARGET)}): {'PASS' if summary['met'] else 'FAIL'}"
    )

    s = runs["scst"]
    if s["scst_steps"]:
        print(
            f"\nSCST phase, {s['scst_steps']} steps, rewards on the training images (metrics log; "
            "mean over the phase, its first and last tenth, std of the per-step means):\n"
        )
        print("| statistic | phase | first tenth | last tenth | std over steps |")
        print("|---|---|---|---|---|")
        for label, key, fmt in (
            ("sample CIDEr-D", "scst_sample_reward", "{:.3f}"),
            ("greedy CIDEr-D", "scst_greedy_reward", "{:.3f}"),
            ("samples beating the baseline", "scst_beat_baseline", "{:.1%}"),
        ):
            print(
                f"| {label} | {fmt.format(s[key])} | {fmt.format(s[key + '_first_tenth'])} | "
                f"{fmt.format(s[key + '_last_tenth'])} | {fmt.format(s[key + '_step_std'])} |"
            )
        print(
            f"| sample − greedy | {s['scst_advantage']:+.3f} | | | "
            f"{s['scst_advantage_step_std']:.3f} |"
        )
    print(
        f"\nPer-sample rewards on the validation scenes, final models ({PROBE_SAMPLES} samples "
        "at temperature 1 per image and the greedy caption, CIDEr-D):\n"
    )
    print(
        "| arm | greedy | samples | std (all) | std within image | sample − greedy std | "
        "beat greedy | below greedy | beat mean of others | same as greedy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in runs.items():
        p = result["reward_probe"]
        print(
            f"| {name} | {p['greedy_reward']:.3f} | {p['sample_reward']:.3f} | "
            f"{p['sample_reward_std']:.3f} | {p['within_image_std']:.3f} | "
            f"{p['advantage_std']:.3f} | {p['beat_greedy']:.1%} | {p['below_greedy']:.1%} | "
            f"{p['beat_mean_of_others']:.1%} | {p['same_as_greedy']:.1%} |"
        )
    print(
        "\nDecoding controls (captioning.evaluate's options) on the same scenes; length in "
        "tokens, repeated: a bigram or trigram twice, bad ending: last word in BAD_ENDINGS:\n"
    )
    print(
        "| arm | decoding | correct | BLEU-4 | CIDEr | length | repeated 2-gram | "
        "repeated 3-gram | either | bad ending |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in runs.items():
        for label, d in result["decoding"].items():
            print(
                f"| {name} | {label} | {d['correct']:.1%} | {d['Bleu_4']:.3f} | "
                f"{d['CIDEr']:.3f} | {d['mean_length']:.2f} | {d['repeated_bigram']:.1%} | "
                f"{d['repeated_trigram']:.1%} | {d['repeated_ngram']:.1%} | "
                f"{d['bad_ending']:.1%} |"
            )
    return summary


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
    commands = [" ".join(sys.argv), " ".join(xe_command) + " &"]
    with open(os.path.join(args.out, "xe.log"), "w", encoding="utf-8") as xe_log:
        xe = subprocess.Popen(xe_command, stdout=xe_log, stderr=subprocess.STDOUT)
        first = args.max_minutes - args.scst_minutes
        first_command = train_command(args, data, scst_dir, first, [*extra, "--eval-images", "0"])
        commands.append(" ".join(first_command))
        run(first_command)
        with open(os.path.join(scst_dir, "metrics.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        epoch = [r for r in rows if r["kind"] == "step"][-1]["epoch"]
        resumed = train_command(args, data, scst_dir, args.scst_minutes, extra)
        resumed = [*resumed, "--resume", "--scst-after", str(epoch)]
        commands.append(" ".join(resumed))
        run(resumed)
        scst_seconds = time.monotonic() - started
        if xe.wait() != 0:
            raise SystemExit(f"the cross-entropy run failed; see {xe_log.name}")
    runs = {
        "xe": run_scores(xe_dir, time.monotonic() - started),
        "scst": run_scores(scst_dir, scst_seconds),
    }
    print(f"\n{args.max_objects}-object set, {args.val_size} validation images, greedy captions:")
    for name, result in runs.items():
        s = result["scores"]
        print(
            f"  {name:4s} {result['global_step']:6d} steps ({result['scst_steps']} SCST), "
            f"{result['wall_seconds'] / 60:.1f} min: correct {s['correct']:.1%}  "
            f"BLEU-4 {s['bleu4']:.3f}  CIDEr {s['cider']:.3f} (training's scores)"
        )
    report = {
        "host": describe_host(),
        "cpu_count": os.cpu_count(),
        "commands": commands,
        "max_objects": args.max_objects,
        "references": args.references,
        "train_flags": TRAIN_FLAGS[args.references] + extra,
        "max_minutes": args.max_minutes,
        "scst_minutes": args.scst_minutes,
        "runs": runs,
    }
    name = "quality_scst.json"
    if args.references == "varied":
        report["scst"] = varied_report(args, data, runs, extra)
        name = "quality_varied.json"
    with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"report: {os.path.join(args.out, name)}")
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
