"""Which recurrent kernel trains fastest on this machine: measured, then cached.

The recurrent layers can train through three kernels that compute the same function (the tests
check losses and gradients agree): textgen's C++ LSTM ops, the lean kernel on TensorFlow ops,
and the stock Keras layers. Which is fastest depends on the host, not on the model: on one
2-core AMD EPYC the C++ ops were 1.3x the TensorFlow-op kernel, on a 2-core Intel Xeon they were
half as fast (bench/README.md). So with `--fused auto` the training loop times a few steps of
each candidate on the run's own model and batch, keeps the fastest and writes the choice to a
cache keyed like the op build (CPU flags, TensorFlow version, the kernels' source) plus the
shapes that decide the speed, the precision and the set of candidates measured (`entry_key`); a
later run with the same key reads it and measures nothing. The candidates are in the key because
they differ between runs of one shape on one machine (`TEXTGEN_NATIVE_OPS=0`, a failed C++ build):
a measurement without the C++ ops must never answer for a run that has them, and such a run must
not overwrite the entry of the runs that do.

The candidates take turns, one timed step each per round, until the leader is ahead by more than
the noise for two rounds in a row, or a round cap or time budget is hit (`time_training`): one
lucky or unlucky second must not decide for the cache's whole life.

`--precision bfloat16` times the lean kernels with bfloat16 matmuls instead ("C++ ops bf16", "TF
ops bf16"; `textgen.network.precision`); float32, and auto (which trains in float32 for now,
`precision.AUTO_TRAINING`), time the float32 ones.

This module holds the choice logic; `TrainingLoop.choose_kernels` supplies the timing. Forced
choices skip it: `--fused on` (lean kernels, on the C++ ops where they build), `--fused off`
(stock layers), `TEXTGEN_NATIVE_OPS=0` (never the C++ ops).

Environment:
    TEXTGEN_KERNEL        what `--fused auto` does on a CPU: measure (the default), or one of
                          native, tf, stock to take that kernel without measuring (a cluster
                          whose machines are known; the test suite, whose runs must not depend
                          on a timing).
    TEXTGEN_KERNEL_CACHE  the cache file (default: kernel-choice.json in TEXTGEN_CACHE_DIR).
"""

import dataclasses
import hashlib
import json
import os
import platform
import re
import time
from pathlib import Path

import tensorflow as tf

from textgen.errors import DiskFull, UsageError
from textgen.io import atomic_write
from textgen.network import native_ops

CACHE_NAME = "kernel-choice.json"
# The files whose code decides each kernel's speed: a change to any of them measures again.
KERNEL_SOURCES = (
    "fused_kernels.py",
    "recurrent_stack.py",
    "lstm_recurrence.cc",
    "kernel_choice.py",
)


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str  # as printed and cached: "C++ ops", "TF ops", "stock Keras", "TF ops bf16"
    fused: bool  # RecurrentStack.fused: the lean kernels (True) or the stock layers (False)
    native: bool  # RecurrentStack.use_native_ops: the LSTM's recurrence on textgen's C++ ops
    precision: str = "float32"  # RecurrentStack.precision: the lean kernels' matmuls


NATIVE = Candidate("C++ ops", fused=True, native=True)
TF_OPS = Candidate("TF ops", fused=True, native=False)
STOCK = Candidate("stock Keras", fused=False, native=False)
# bfloat16 matmuls (`textgen.network.precision`): on the TF-op kernel all of them, on the C++ ops
# those outside the op (the recurrence inside stays float32). The stock layers have no such path
# (Keras' mixed_bfloat16 LSTM fails or falls back on the CPU).
NATIVE_BF16 = Candidate("C++ ops bf16", fused=True, native=True, precision="bfloat16")
TF_OPS_BF16 = Candidate("TF ops bf16", fused=True, native=False, precision="bfloat16")


def candidates(cell, native_available, precision="float32"):
    """The kernels worth timing for `cell` at `precision` ("float32" or "bfloat16",
    `precision.training_precision`): the C++ ops only exist for the LSTM and only where they
    build; the stock layers have no bfloat16 form."""
    native = cell == "lstm" and native_available
    if precision == "bfloat16":
        return ([NATIVE_BF16] if native else []) + [TF_OPS_BF16]
    return ([NATIVE] if native else []) + [TF_OPS, STOCK]


BY_SETTING = {"native": NATIVE, "tf": TF_OPS, "stock": STOCK}


def preset(options):
    """The candidate TEXTGEN_KERNEL names, or None to measure. UsageError for a bad value; the
    C++ ops where they are not among `options` (no LSTM, no build) give way to the TF ops. The
    precision is the options' own, so a preset never depends on a timing."""
    setting = os.environ.get("TEXTGEN_KERNEL", "measure").strip().lower()
    if setting == "measure":
        return None
    if setting not in BY_SETTING:
        raise UsageError(
            f"TEXTGEN_KERNEL must be measure, native, tf or stock, got {setting!r}; unset it "
            "to measure"
        )
    wanted = BY_SETTING[setting]
    precision = options[0].precision
    same = [
        option
        for option in options
        if option.precision == precision
        and (option.fused, option.native) == (wanted.fused, wanted.native)
    ]
    if same:
        return same[0]
    return TF_OPS_BF16 if precision == "bfloat16" else TF_OPS


def apply(stacks, candidate):
    """Makes every RecurrentStack in `stacks` trace `candidate` (read when a step is traced)."""
    for stack in stacks:
        stack.fused = candidate.fused
        stack.use_native_ops = candidate.native
        stack.precision = candidate.precision


def cache_key(**shape):
    """The machine-and-shape part of the cache's key (`entry_key` adds the candidates): the
    machine (CPU flags, core count, TensorFlow, the kernels' source) and `shape`, the sizes that
    decide which kernel is fastest (cell, layers, batch, ...)."""
    here = Path(__file__).parent
    parts = [
        tf.__version__,
        platform.machine(),
        native_ops._cpu_flags(),
        str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        *((here / name).read_text() for name in KERNEL_SOURCES),
        json.dumps(shape, sort_keys=True),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


PRECISION = "float32"  # the `--precision` a caller that names none asked for


def entry_key(key, options, precision=PRECISION):
    """Where `choose` caches its answer for `options`: `key` (`cache_key`: machine and shape),
    the `--precision` asked for and the candidates' names, sorted, e.g.
    "<24 hex>/float32/C++ ops,TF ops,stock Keras". A run with other candidates (no C++ ops under
    TEXTGEN_NATIVE_OPS=0 or a failed build; the bfloat16 kernels) reads and writes its own
    entry, so it neither answers for nor overwrites the default's.

    Entries written before the candidates were in the key sit under the bare `key`, which no
    lookup uses any more: an old cache still loads, its training entries are simply never
    matched, and each shape is measured once more (the old entries measured fewer rounds, and a
    forced run may have overwritten them, so none can be trusted to stand for a candidate set).
    They are left in the file, which the generation loop's choices (also under bare keys)
    share."""
    names = ",".join(sorted(option.name for option in options))
    return f"{key}/{precision}/{names}"


def cache_path():
    if os.environ.get("TEXTGEN_KERNEL_CACHE"):
        return Path(os.environ["TEXTGEN_KERNEL_CACHE"])
    return native_ops.cache_dir() / CACHE_NAME


def read_cache(path):
    """{key: entry}; an unreadable or damaged cache counts as empty (it only saves a
    measurement)."""
    try:
        with open(path, encoding="utf-8") as file:
            entries = json.load(file)
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_cache(path, key, entry):
    """Adds one entry; a cache that cannot be written costs a measurement next time, nothing
    else."""
    entries = read_cache(path)
    entries[key] = entry
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(entries, indent=1, sort_keys=True).encode())
    except (OSError, DiskFull):
        pass


@dataclasses.dataclass
class Choice:
    candidate: Candidate
    rates: dict  # candidate name -> measured units/s (empty when read from the cache)
    failures: dict  # candidate name -> why it could not run
    cached: bool
    seconds: float = 0.0  # what the measurement cost
    rounds: int = 0  # timed rounds measured
    stable: bool = True  # the leader was clearly ahead when measuring stopped (not a cap)
    preset: bool = False  # named by TEXTGEN_KERNEL, not measured
    train_step: object = None  # the measured winner's traced train step, kept by the loop

    def line(self, unit="tok"):
        """The one line a run prints about its kernel."""
        if self.preset:
            return f"recurrent kernel: {self.candidate.name} (TEXTGEN_KERNEL, not measured)"
        if self.cached:
            rates = self.rates
            measured = ", ".join(f"{name} {rate:,.0f} {unit}/s" for name, rate in rates.items())
            return (
                f"recurrent kernel: {self.candidate.name} (chosen by an earlier measurement on "
                f"this machine: {measured}; delete {cache_path()} to measure again)"
            )
        measured = [f"{name} {rate:,.0f} {unit}/s" for name, rate in self.rates.items()]
        measured += [f"{name} failed ({why})" for name, why in self.failures.items()]
        how = f"best of {self.rounds} rounds" if self.rounds else "measured"
        if not self.stable:
            how += ", no clear leader within the round or time cap"
        return (
            f"recurrent kernel: {self.candidate.name}, the fastest measured here "
            f"({'; '.join(measured)}; {how} in {self.seconds:.0f} s, cached for later runs); "
            "--fused on|off forces one"
        )


@dataclasses.dataclass
class Measurement:
    """What `time_training` measured."""

    rates: dict  # candidate name -> best units/s
    failures: dict  # candidate name -> why it could not run
    train_steps: dict  # candidate name -> its traced train step
    rounds: int = 0  # timed rounds
    stable: bool = True  # stopped on a clear leader, not on the round cap or the budget


def _cached_entry(entry, names, precision):
    """Whether `entry` is a training choice made among exactly `names` at `precision`; anything
    else (an entry without the candidates, a damaged one) is not used and gets measured again."""
    return (
        isinstance(entry, dict)
        and entry.get("choice") in names
        and entry.get("candidates") == sorted(names)
        and entry.get("precision") == precision
        and isinstance(entry.get("rates", {}), dict)
        and all(isinstance(rate, (int, float)) for rate in entry.get("rates", {}).values())
    )


def choose(options, measure, key, path=None, precision=PRECISION):
    """The fastest of `options`: from the cache at `path` when it holds this machine-and-shape
    `key` for exactly these candidates and `precision` (`entry_key`), else by calling
    `measure(options)` -> a `Measurement` and caching the answer there. A candidate that fails
    is left out; if all fail, the first one is taken (the caller's safe default) and nothing is
    cached."""
    chosen = preset(options)
    if chosen is not None:
        return Choice(chosen, {}, {}, cached=False, preset=True)
    path = cache_path() if path is None else path
    by_name = {option.name: option for option in options}
    full_key = entry_key(key, options, precision)
    entry = read_cache(path).get(full_key)
    if _cached_entry(entry, list(by_name), precision):
        return Choice(by_name[entry["choice"]], dict(entry.get("rates", {})), {}, cached=True)
    start = time.perf_counter()
    measured = measure(options)
    rates, failures = measured.rates, measured.failures
    seconds = time.perf_counter() - start
    if not rates:
        return Choice(options[0], {}, failures, cached=False, seconds=seconds)
    best = max(rates, key=rates.get)
    write_cache(
        path,
        full_key,
        {
            "choice": best,
            "candidates": sorted(by_name),
            "precision": precision,
            "rates": {name: round(rate) for name, rate in rates.items()},
            "rounds": measured.rounds,
        },
    )
    return Choice(
        by_name[best],
        rates,
        failures,
        cached=False,
        seconds=seconds,
        rounds=measured.rounds,
        stable=measured.stable,
        train_step=measured.train_steps.get(best),
    )


def _first_cause(error):
    """`Type: message` of the error a traced step raised. Keras wraps a layer's error in
    "Exception encountered when calling ..." with the message in bold, TensorFlow in "in user
    code" frames whose last error line is the original one."""
    text = str(error)
    bold = re.search(r"\x1b\[1m(.*?)\x1b\[0m", text, re.DOTALL)
    if bold:
        text = bold.group(1)
    causes = re.findall(r"^\s*\w+(?:Error|Exception): (.+)$", text, re.MULTILINE)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    message = causes[-1].strip() if causes else (lines[0] if lines else "")
    return f"{type(error).__name__}: {message}"


# When `time_training` stops: the leader's best rate must beat the runner-up's by more than
# MARGIN and by more than twice the noise (how far either one's median rate lies below its best)
# in STABLE_ROUNDS consecutive rounds with the same leader, after at least MIN_ROUNDS rounds; or
# MAX_ROUNDS rounds; or BUDGET seconds of timed rounds.
MARGIN = 0.05
STABLE_ROUNDS = 2
MIN_ROUNDS = 3
MAX_ROUNDS = 12
BUDGET = 15.0


def _noise(rates):
    """How far the median of `rates` (units/s) lies below their best, as a fraction of it."""
    ordered = sorted(rates)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return max(ordered) / median - 1.0 if median > 0 else float("inf")


def time_training(
    trace,
    run_step,
    options,
    batch,
    min_rounds=MIN_ROUNDS,
    max_rounds=MAX_ROUNDS,
    budget=BUDGET,
    warmup=1,
    clock=time.perf_counter,
):
    """A `Measurement` of a training loop's real train step on `batch` with each of `options`.

    `trace(option)` applies the option and returns the loop's train step traced with it;
    `run_step(train_step, batch)` trains one batch with that step and returns the units it
    trained. After `warmup` untimed steps each (the trace and graph set-up), the candidates take
    turns, one timed step each per round (the order rotating from round to round), so a machine
    that gets busier hurts them alike; each keeps its best rate. The rounds stop once the leader
    has been ahead of the runner-up by more than MARGIN (5 %) and more than twice the noise
    (median against best rate of either) in STABLE_ROUNDS (2) consecutive rounds, at least
    `min_rounds` in all; otherwise after `max_rounds`, or at the first round's end past `budget`
    seconds of timed rounds. So the measurement costs one trace and `warmup` steps per candidate
    plus at most min(`max_rounds` rounds, `budget` + one round) of timed steps: with the defaults
    3 to 12 steps per candidate, and no more than about 15 s plus one step of each once the
    budget is spent (a clear winner stops after 3 rounds, as before). A candidate that raises is
    left out, with the error's first cause. The caller puts back what the steps changed (the
    weights, the optimizer, the states). `clock` is injectable for tests."""
    steps, failures = {}, {}
    for option in options:
        try:
            step = trace(option)
            for _ in range(warmup):
                run_step(step, batch)
            steps[option.name] = step
        except Exception as error:  # a kernel that cannot run here is left out
            failures[option.name] = _first_cause(error)
    samples = {name: [] for name in steps}
    names = list(steps)
    rounds, streak, leader, stable = 0, 0, None, False
    started = clock()
    while names and rounds < max_rounds:
        for index in range(len(names)):
            name = names[(rounds + index) % len(names)]
            start = clock()
            count = run_step(steps[name], batch)
            samples[name].append(count / max(clock() - start, 1e-9))
        rounds += 1
        if len(names) == 1:  # nothing to rank: one round gives its rate
            stable = True
            break
        best = {name: max(rates) for name, rates in samples.items()}
        first, second = sorted(names, key=best.get, reverse=True)[:2]
        noise = max(_noise(samples[first]), _noise(samples[second]))
        ahead = best[first] > best[second] * (1.0 + max(MARGIN, 2.0 * noise))
        streak = (streak + 1 if first == leader else 1) if ahead else 0
        leader = first
        if streak >= STABLE_ROUNDS and rounds >= min_rounds:
            stable = True
            break
        if clock() - started >= budget:
            break
    best = {name: max(rates) for name, rates in samples.items()}
    return Measurement(best, failures, steps, rounds, stable)
