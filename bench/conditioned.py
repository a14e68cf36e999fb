"""Label-conditioned generation on the fortunes: does the label help the model, can the model
tell the label, and what does it cost to generate with one.

    .venv/bin/python bench/conditioned.py                     # 6 minutes per arm, three arms
    .venv/bin/python bench/conditioned.py --minutes 10 --out /tmp/conditioned_bench
    .venv/bin/python bench/conditioned.py --skip-training     # measure the runs already in --out
    .venv/bin/python bench/conditioned.py --baselines-only    # naive Bayes and majority only

The corpus is the BSD fortune collection in ../shared/data/fortunes (12 category files,
entries between `%` lines), read as documents (`--document-boundary separator:%`), 10% of them
held out (`--val-fraction 0.1`, the same seeded choice in every run); a document's label is
its file's name (`--labels folder`), and every arm trains on the documents in one shuffled
order (`--document-order shuffled`, the labelled runs' default). It trains three arms with
`python -m textgen.train`, one after the other (never side by side: each gets both cores),
`--minutes` each:

- every-step: the label fed with every token (`--label-injection every-step`);
- document-start: the label fed once, where each document starts
  (`--label-injection document-start`);
- unconditioned: no labels, the reference.

Then, on the held-out documents only (rebuilt with `labelled_documents` and
`held_out_documents`, as training held them out), it measures each run's best weights:
nats/char with each document's true label and with `<none>`, top-1 accuracy of
`LanguageModel.classify` against naive Bayes on word counts (scikit-learn, trained on the other
documents) and the majority class, and generation speed with a label against without one (same
model) and against the unconditioned arm (best of 9, calls interleaved). It prints samples of
two labels, a table with the targets, and writes --out/results.json. scikit-learn comes with
`pip install -e '.[bench]'`.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from host import describe_host  # noqa: E402

from textgen.corpus.preparation import held_out_documents  # noqa: E402
from textgen.training.metrics_log import FILE, evaluations, read_rows  # noqa: E402

DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "fortunes"))
BOUNDARY, VAL_FRACTION = "separator:%", 0.1
# The category files only: the folder's SOURCE.md is not a fortune.
GLOB = "[a-z]*"
# textgen.train's --seed, which also picks the held-out documents; train_command passes none.
SEED = 0
ARMS = {
    "every-step": ["--labels", "folder", "--label-injection", "every-step"],
    "document-start": ["--labels", "folder", "--label-injection", "document-start"],
    # The same shuffled order of training documents as the labelled arms get by default.
    "unconditioned": ["--document-order", "shuffled"],
}
LABELLED = [arm for arm, extra in ARMS.items() if "--labels" in extra]
NONE = "<none>"
ALPHAS = (0.1, 0.3, 1.0)
SAMPLE_LABELS = ("computers", "songs-poems")
GENERATION_LENGTH, REPEATS = 2000, 9
# The targets: what the label buys on held-out text, and the most generating with it may cost.
MIN_GAIN, MAX_OVERHEAD = 0.02, 0.05


def train_command(data, minutes, out, extra, steps=0):
    """The arm's textgen.train command: `minutes` of training, or with `steps` exactly that many
    steps (the same work for every arm however busy the host is)."""
    budget = f"--max-steps {steps}" if steps else f"--max-minutes {minutes:g}"
    flags = (
        f"--document-boundary {BOUNDARY} --val-fraction {VAL_FRACTION} {budget} "
        "--eval-every 200 --sample-every 0 --no-export --no-progress"
    ).split()
    return [
        sys.executable,
        "-m",
        "textgen.train",
        "--data",
        data,
        "--glob",
        GLOB,
        *flags,
        "--out",
        out,
        *extra,
    ]


def held_out_split(data):
    """(texts, labels, held): every document of `data` with its label, in corpus order, and
    which of them training held out."""
    from textgen.corpus.documents import labelled_documents

    documents = labelled_documents(data, boundary=BOUNDARY, labels="folder", glob=GLOB)
    held = held_out_documents(len(documents), VAL_FRACTION, SEED)
    return [text for text, _ in documents], np.array([label for _, label in documents]), held


def naive_bayes(train_texts, train_labels, test_texts, test_labels, alpha):
    """Top-1 accuracy on the test documents of multinomial naive Bayes on word counts."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB

    vectorizer = CountVectorizer()  # words, lowercased, the default token pattern
    classifier = MultinomialNB(alpha=alpha).fit(vectorizer.fit_transform(train_texts), train_labels)
    predicted = classifier.predict(vectorizer.transform(test_texts))
    return float(np.mean(predicted == test_labels))


def baselines(texts, labels, held):
    train = [text for text, h in zip(texts, held) if not h]
    test = [text for text, h in zip(texts, held) if h]
    train_labels, test_labels = labels[~held], labels[held]
    # alpha is chosen on a split of the training documents, so the held-out ones stay unseen;
    # a plain seeded choice, not a stratified one: some labels may have a single document.
    inner = held_out_documents(len(train), VAL_FRACTION, SEED + 1)
    fit = [text for text, h in zip(train, inner) if not h]
    check = [text for text, h in zip(train, inner) if h]
    grid = {
        alpha: naive_bayes(fit, train_labels[~inner], check, train_labels[inner], alpha)
        for alpha in ALPHAS
    }
    chosen = max(ALPHAS, key=lambda alpha: grid[alpha])  # ties: the smaller alpha
    majority = Counter(train_labels.tolist()).most_common(1)[0][0]
    return {
        "naive_bayes": {
            "alpha": 1.0,
            "accuracy": naive_bayes(train, train_labels, test, test_labels, 1.0),
        },
        "naive_bayes_grid": {
            "alpha": chosen,
            "accuracy": naive_bayes(train, train_labels, test, test_labels, chosen),
            "split_accuracy": {str(alpha): grid[alpha] for alpha in ALPHAS},
        },
        "majority": {"label": majority, "accuracy": float(np.mean(test_labels == majority))},
    }


def nats_per_char(scores):
    return float(-sum(s["log_prob"] for s in scores) / sum(s["characters"] for s in scores))


def training_best(run):
    """The held-out nats/char of the run's best evaluation, as training measured it."""
    return min(row["val"] for row in evaluations(read_rows(os.path.join(run, FILE))))


def run_length(run):
    """(steps, seconds of training) of a finished run, from its metrics log."""
    rows = read_rows(os.path.join(run, FILE))
    times = [row["time"] for row in rows if isinstance(row.get("time"), (int, float))]
    return {
        "steps": max((row["step"] for row in rows), default=0),
        "seconds": round(max(times) - min(times), 1) if times else None,
    }


def best_times(calls):
    """Best of REPEATS seconds of each call, after one warm-up each (the first call traces);
    the rounds interleave the calls, so that the other tenant of the host slows each alike."""
    for call in calls.values():
        call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(REPEATS):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: GENERATION_LENGTH / seconds for name, seconds in best.items()}  # chars/s


def measure(run, texts, labels, plain):
    """The labelled arm in `run` on the held-out `texts`; `plain` is the unconditioned model."""
    from textgen.network.language_model import LanguageModel

    model = LanguageModel.from_run_directory(run)
    if model.labels[0] != NONE or not set(labels) <= set(model.labels):
        sys.exit(f"error: {run} has the labels {model.labels}, not {NONE} and the corpus's")
    true_scores = model.score_each(texts, label=labels.tolist(), documents=True)
    characters = sum(s["characters"] for s in true_scores)
    true = nats_per_char(true_scores)
    none = nats_per_char(model.score_each(texts, label=NONE, documents=True))
    log_probs, names = model.classify(texts, batch_size=64)
    names = np.asarray(names)
    accuracy = float(np.mean(names[np.argmax(log_probs, axis=1)] == labels))
    joint = log_probs + model.label_log_prior("training")
    accuracy_prior = float(np.mean(names[np.argmax(joint, axis=1)] == labels))
    # The label mixture sum_l p(l) p(d | l): what the true label is measured against when
    # the gain is split into the label's information and <none>'s distance from the mixture.
    top = joint.max(axis=1)
    mixture = top + np.log(np.exp(joint - top[:, None]).sum(axis=1))
    mixture_nats = float(-mixture.sum() / characters)
    label = SAMPLE_LABELS[0]
    speed = best_times(
        {
            "label": lambda: model.sample(length=GENERATION_LENGTH, seed=1, label=label),
            "no label": lambda: model.sample(length=GENERATION_LENGTH, seed=1),
            "unconditioned arm": lambda: plain.sample(length=GENERATION_LENGTH, seed=1),
        }
    )
    samples = {
        name: model.sample_documents(3, length=300, temperature=0.8, seed=1, label=name)
        for name in SAMPLE_LABELS
    }
    return {
        "nats_per_char": {
            "true": true,
            "none": none,
            "mixture": mixture_nats,
            "training_best": training_best(run),
        },
        "accuracy": accuracy,
        "accuracy_prior": accuracy_prior,
        "characters": characters,
        "chars_per_second": speed,
        # A cost ratio: time with the label over time without it, less one.
        "overhead": {
            "no label": speed["no label"] / speed["label"] - 1,
            "unconditioned arm": speed["unconditioned arm"] / speed["label"] - 1,
        },
        "samples": samples,
    }


def information_bound(train_labels, test_labels, characters):
    """The most nats/char the true label can save against the label mixture
    sum_l p(l) p(d | l) of the same model: per document, log p(d | l) - log sum_l' p(l')
    p(d | l') = log p(l | d) - log p(l) <= -log p(l), so on average at most the cross-entropy
    of the prior on the held-out labels, spread over the held-out characters. A `<none>` that
    is the mixture gains exactly the label's information; only a `<none>` worse than the
    mixture can gain more. The prior is classify's: the training frequencies, add-one
    smoothed."""
    names = sorted(set(train_labels.tolist()) | set(test_labels.tolist()))
    counts = Counter(train_labels.tolist())
    total = len(train_labels) + len(names)
    nats = -sum(np.log((counts[label] + 1) / total) for label in test_labels.tolist())
    return float(nats / characters), float(nats / len(test_labels))


def targets(arms, base):
    """PASS/FAIL of each target for each labelled arm. Classify (with the training prior, as
    `textgen.score --classify` decides) has to beat both naive Bayes rows, and the overhead to
    be under the bound against both references."""
    nb = max(base["naive_bayes"]["accuracy"], base["naive_bayes_grid"]["accuracy"])
    checks = []
    for arm in [arm for arm in LABELLED if arm in arms]:
        n, accuracy = arms[arm]["nats_per_char"], arms[arm]["accuracy_prior"]
        gain, overhead = n["none"] - n["true"], max(arms[arm]["overhead"].values())
        for target, measured, passed in (
            (f"true label lowers nats/char by >= {MIN_GAIN}", f"{gain:+.4f}", gain >= MIN_GAIN),
            ("classify beats naive Bayes", f"{accuracy:.1%} vs {nb:.1%}", accuracy > nb),
            (
                f"label generation overhead < {MAX_OVERHEAD:.0%}",
                f"{overhead:+.1%}",
                overhead < MAX_OVERHEAD,
            ),
        ):
            checks.append(
                {"arm": arm, "target": target, "measured": measured, "pass": bool(passed)}
            )
    return checks


def print_baselines(base):
    grid = base["naive_bayes_grid"]
    print(f"naive Bayes, alpha 1.0: {base['naive_bayes']['accuracy']:.1%}")
    print(
        f"naive Bayes, alpha {grid['alpha']:g} (chosen on a split of the training documents: "
        + ", ".join(f"{a}: {acc:.1%}" for a, acc in grid["split_accuracy"].items())
        + f"): {grid['accuracy']:.1%}"
    )
    print(f"majority ({base['majority']['label']}): {base['majority']['accuracy']:.1%}")


def print_tables(arms, base, checks):
    plain = arms["unconditioned"]["nats_per_char"]
    print(
        "\n| arm | nats/char, true label | nats/char, <none> | difference | against "
        "unconditioned | training's best val | classify top-1 |"
    )
    print("|---|---|---|---|---|---|---|")
    for arm in [arm for arm in LABELLED if arm in arms]:
        n, flat, prior = (
            arms[arm]["nats_per_char"],
            arms[arm]["accuracy"],
            arms[arm]["accuracy_prior"],
        )
        print(
            f"| {arm} | {n['true']:.4f} | {n['none']:.4f} | {n['true'] - n['none']:+.4f} | "
            f"{n['true'] - plain['none']:+.4f} | {n['training_best']:.4f} | "
            f"{flat:.1%} uniform, {prior:.1%} training prior |"
        )
    print(
        f"| unconditioned | - | {plain['none']:.4f} (no label) | - | - | "
        f"{plain['training_best']:.4f} | - |"
    )
    grid = base["naive_bayes_grid"]
    for name, accuracy in (
        ("naive Bayes, alpha 1.0", base["naive_bayes"]["accuracy"]),
        (f"naive Bayes, alpha {grid['alpha']:g} (grid)", grid["accuracy"]),
        (f"majority ({base['majority']['label']})", base["majority"]["accuracy"]),
    ):
        print(f"| {name} | - | - | - | - | - | {accuracy:.1%} |")
    print(
        "\n| arm | label (chars/s) | no label (chars/s) | unconditioned arm (chars/s) | "
        "overhead against no label | against unconditioned |"
    )
    print("|---|---|---|---|---|---|")
    for arm in [arm for arm in LABELLED if arm in arms]:
        speed, overhead = arms[arm]["chars_per_second"], arms[arm]["overhead"]
        print(
            f"| {arm} | {speed['label']:,.0f} | {speed['no label']:,.0f} | "
            f"{speed['unconditioned arm']:,.0f} | {overhead['no label']:+.1%} | "
            f"{overhead['unconditioned arm']:+.1%} |"
        )
    print(
        "\n| arm | gain of the true label over <none> | = the label's information (true "
        "against the label mixture) | + <none> against the mixture | bound on the information "
        "(prior's cross-entropy) |"
    )
    print("|---|---|---|---|---|")
    for arm in [arm for arm in LABELLED if arm in arms]:
        n, bound = arms[arm]["nats_per_char"], arms[arm]["information_bound"]
        print(
            f"| {arm} | {n['none'] - n['true']:+.4f} | {n['mixture'] - n['true']:+.4f} | "
            f"{n['none'] - n['mixture']:+.4f} | {bound['nats_per_char']:.4f} nats/char "
            f"({bound['nats_per_document']:.3f} nats/document) |"
        )
    print("\n| arm | target | measured | |\n|---|---|---|---|")
    for check in checks:
        verdict = "PASS" if check["pass"] else "FAIL"
        print(f"| {check['arm']} | {check['target']} | {check['measured']} | {verdict} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DATA, help="the fortunes folder")
    parser.add_argument("--minutes", type=float, default=6, help="training minutes per arm")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train each arm this many steps instead of --minutes (the same work per arm on a "
        "busy host)",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(ARMS),
        help="the arms to train and measure (unconditioned is always measured)",
    )
    parser.add_argument("--out", default="/tmp/conditioned_bench", help="where the runs go")
    parser.add_argument("--skip-training", action="store_true", help="measure earlier runs")
    parser.add_argument("--baselines-only", action="store_true", help="no model: the baselines")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)  # the training runs start in ROOT
    print(describe_host())
    if not os.path.isdir(args.data):
        sys.exit(f"error: {args.data} is not a folder; pass --data with the fortunes folder")
    # Before any training: a corpus the split cannot be rebuilt for fails in seconds.
    texts, labels, held = held_out_split(args.data)
    held_texts = [text for text, h in zip(texts, held) if h]
    print(f"{int(held.sum())} of {len(texts)} documents held out")
    base = baselines(texts, labels, held)
    print_baselines(base)
    if args.baselines_only:
        return
    chosen = dict.fromkeys([*args.arms, "unconditioned"])
    if not args.skip_training:
        for arm in chosen:
            out, extra = os.path.join(args.out, arm), ARMS[arm]
            command = train_command(args.data, args.minutes, out, extra, args.steps)
            print(" ".join(command[1:]), flush=True)
            subprocess.run(command, check=True, cwd=ROOT)
    from textgen.network.language_model import LanguageModel

    plain_run = os.path.join(args.out, "unconditioned")
    plain = LanguageModel.from_run_directory(plain_run)
    arms = {
        "unconditioned": {
            "nats_per_char": {
                "none": nats_per_char(plain.score_each(held_texts, documents=True)),
                "training_best": training_best(plain_run),
            }
        }
    }
    for arm in [arm for arm in LABELLED if arm in chosen]:
        arms[arm] = measure(os.path.join(args.out, arm), held_texts, labels[held], plain)
        nats, per_document = information_bound(labels[~held], labels[held], arms[arm]["characters"])
        arms[arm]["information_bound"] = {
            "nats_per_char": nats,
            "nats_per_document": per_document,
        }
        for name, documents in arms[arm]["samples"].items():
            print(f"\n{arm}, label {name}:")
            for document in documents:
                print(document + "\n%")
    checks = targets(arms, base)
    print_tables(arms, base, checks)
    results = {
        "host": describe_host(),
        "data": args.data,
        "minutes": None if args.skip_training or args.steps else args.minutes,
        "steps": None if args.skip_training else args.steps or None,
        "arm_steps_and_seconds": {arm: run_length(os.path.join(args.out, arm)) for arm in chosen},
        "documents": {"count": len(texts), "held_out": int(held.sum())},
        "baselines": base,
        "arms": arms,
        "targets": checks,
    }
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
