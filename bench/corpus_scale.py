"""Corpus scale: `textgen.prepare` and training on corpora of 10 MB, 100 MB and 1 GB.

    python bench/corpus_scale.py                          # 10 MB and 100 MB, a few minutes
    python bench/corpus_scale.py --sizes 10,100,1000      # and 1 GB (about 20 minutes, 2 cores)

The corpora are made on the fly in a temporary directory and deleted at the end (`--keep` keeps
them): tiny-shakespeare with its lines shuffled at random, over and over, and a random-Unicode
text of 5,000 characters (CJK ideographs, spaces, newlines). For each corpus and level (char on
both; word level, the regex segmenter, on the English one) it prints:

- prepare: wall time of `python -m textgen.prepare`, MB/s of the file, peak RSS;
- train: peak RSS of a training process on the prepared directory (the memory map's resident
  pages included), the time from its start to the end of its first training step (imports,
  the model, kernel choice, the first trace), training tokens/s over the steps after the first;
- validation: wall time of one bounded validation pass (the auto --val-max-tokens of a
  --max-steps run) and its tokens/s.

Each measured thing runs in a process of its own, so each peak RSS is that process's
(`os.wait4`'s ru_maxrss). The host is printed first (bench/host.py).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHAKESPEARE = [
    os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare", "input.txt"),
    os.path.join(ROOT, "data", "tinyshakespeare", "input.txt"),
]
sys.path.insert(0, HERE)

from host import describe_host  # noqa: E402

MB = 1_000_000


def shakespeare_corpus(path, size, seed=0):
    """tiny-shakespeare's lines in random order, again and again, up to `size` bytes."""
    source = next(p for p in SHAKESPEARE if os.path.exists(p))
    with open(source, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            block = "".join(lines[i] for i in rng.permutation(len(lines)))
            block = block[: size - written]
            f.write(block)
            written += len(block)


def unicode_corpus(path, size, seed=0, alphabet=5000, line=40):
    """Random text over `alphabet` characters: CJK ideographs, a space, a newline per `line`."""
    rng = np.random.default_rng(seed)
    points = np.concatenate([np.arange(0x4E00, 0x4E00 + alphabet - 2), [0x20]]).astype(np.uint32)
    written = 0
    with open(path, "wb") as f:
        while written < size:
            codes = points[rng.integers(0, len(points), size=(MB // 3 // line, line))]
            codes[:, -1] = 0x0A
            block = codes.tobytes().decode("utf-32-le").encode("utf-8")
            f.write(block)
            written += len(block)


def run_measured(command):
    """(wall seconds, peak RSS in bytes, stdout) of a child process."""
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed with status {child.returncode}")
    return time.monotonic() - started, usage.ru_maxrss * 1024, output


def train_child(directory, out, steps, started):
    """In the child: prepare a TextTrainer on `directory`, time its first step from `started` (the
    parent's clock when it launched us), a few more, and one validation pass; print JSON."""
    from textgen.config import TrainConfig
    from textgen.training.text_trainer import TextTrainer

    config = TrainConfig(
        data=directory,
        out=out,
        max_steps=steps,
        sample_every=0,
        export=False,
        checkpoint_every=10**9,
    )
    trainer = TextTrainer(
        config, ("data", "out", "max_steps"), log=lambda m: None, progress_bar=False
    )
    trainer.prepare()
    trainer.training_step(trainer.train_batches[0])
    first_step = time.time() - started
    rest = time.monotonic()
    for k in range(1, steps):
        trainer.training_step(trainer.train_batches[k])
    train_rate = (steps - 1) * trainer.train_batches.tokens_per_batch / (time.monotonic() - rest)
    val_started = time.monotonic()
    trainer.evaluate()
    val_seconds = time.monotonic() - val_started
    val_tokens = trainer.val_steps * trainer.val_batches.tokens_per_batch
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                status[key] = int(value.split()[0]) * 1024
    trainer.run.unlock()
    print(
        json.dumps(
            {
                "first_step": first_step,
                "train_rate": train_rate,
                "val_seconds": val_seconds,
                "val_tokens": val_tokens,
                "val_all": trainer.val_batches.inputs.size,
                "train_tokens": trainer.train_batches.inputs.size,
                **status,
            }
        )
    )


def gb(count):
    return f"{count / 1e9:.2f} GB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="corpus sizes in MB, comma-separated")
    parser.add_argument("--variants", default="shakespeare,unicode")
    parser.add_argument("--levels", default="char,word")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--work", default=None, help="directory for the corpora (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and prepared dirs")
    parser.add_argument("--child-train", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_train:
        directory, out, steps, started = args.child_train
        train_child(directory, out, int(steps), float(started))
        return
    print(describe_host(), flush=True)
    work = tempfile.mkdtemp(prefix="corpus_scale.", dir=args.work)
    python = sys.executable
    rows = []
    try:
        for variant in args.variants.split(","):
            make = shakespeare_corpus if variant == "shakespeare" else unicode_corpus
            for size in (int(s) * MB for s in args.sizes.split(",")):
                path = os.path.join(work, f"{variant}-{size // MB}MB.txt")
                made = time.monotonic()
                make(path, size)
                print(
                    f"{variant} {size // MB} MB corpus made in {time.monotonic() - made:.0f} s",
                    flush=True,
                )
                for level in args.levels.split(","):
                    if level == "word" and variant != "shakespeare":
                        continue  # random "words" make a vocabulary as large as the text
                    prepared = os.path.join(work, f"{variant}-{size // MB}MB-{level}")
                    seconds, prepare_rss, _ = run_measured(
                        [python, "-m", "textgen.prepare", "--data", path, "--out", prepared]
                        + ["--level", level, "--segmenter", "regex", "--no-progress"]
                    )
                    with open(os.path.join(prepared, "header.json")) as f:
                        header = json.load(f)
                    out = os.path.join(work, "run")
                    shutil.rmtree(out, ignore_errors=True)
                    command = [python, os.path.abspath(__file__), "--child-train", prepared, out]
                    command += [str(args.train_steps), repr(time.time())]
                    _, train_rss, output = run_measured(command)
                    train = json.loads(output.strip().splitlines()[-1])
                    row = {
                        "corpus": f"{variant} {size // MB} MB",
                        "level": level,
                        "prepare_s": header["seconds"],
                        "prepare_process_s": seconds,
                        "prepare_mb_s": size / MB / header["seconds"],
                        "prepare_rss": prepare_rss,
                        "vocabulary": header["vocabulary_size"],
                        "dtype": header["dtype"],
                        "train_rss": train_rss,
                        **train,
                    }
                    rows.append(row)
                    print(
                        f"  {level:4}: prepare {row['prepare_s']:.1f} s ({row['prepare_mb_s']:.1f}"
                        f" MB/s; process {seconds:.1f} s, peak RSS {gb(prepare_rss)}), "
                        f"{row['vocabulary']:,} tokens as {row['dtype']} | train: peak RSS "
                        f"{gb(train_rss)} (at the end: {gb(train['RssAnon'])} anonymous, "
                        f"{gb(train['RssFile'])} file-backed), first step after "
                        f"{train['first_step']:.1f} s, {train['train_rate']:,.0f} tokens/s | "
                        f"validation pass: {train['val_tokens']:,} of {train['val_all']:,} "
                        f"tokens in {train['val_seconds']:.1f} s "
                        f"({train['val_tokens'] / train['val_seconds']:,.0f} tokens/s)",
                        flush=True,
                    )
                    if not args.keep:
                        shutil.rmtree(prepared, ignore_errors=True)
                if not args.keep:
                    os.unlink(path)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
