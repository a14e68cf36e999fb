"""From how many streams on the graph loop generates faster than the XLA-compiled one: measured
on this machine, then cached.

Generation has two loops (`LeanLanguageModel.generate_ids`): `compiled_decode_loop`, step,
sampler and loop compiled together by XLA, and `decode_loop`, a graph loop whose matmuls are
TensorFlow's (oneDNN's). With few streams the step is many tiny ops and XLA wins by saving their
launches; with many streams the matmuls dominate, and oneDNN's are faster than XLA's CPU ones on
some hosts (bench/README.md). So the first time a model of a given shape generates on a machine,
both loops are timed at a few batch sizes, and generation takes XLA below the first size where
the graph loop wins. The answer is cached with the training kernels'
(`textgen.network.kernel_choice`),
keyed by the machine and the model's shape; an exported SavedModel carries the answer of the
machine it was exported on (its `xla_max_streams`).

Both loops give the same argmax text; seeded random draws come from XLA's or TensorFlow's
random kernels, so a seeded sample is reproducible for a given model, machine and batch size.

Environment:
    TEXTGEN_GENERATION   measure (the default), xla (always XLA) or graph (always the graph loop).
"""

import os
import sys
import time

import numpy as np
import tensorflow as tf

from textgen.errors import UsageError
from textgen.network import kernel_choice

SIZES = (8, 64, 256)  # batch sizes timed, smallest first (one stream: XLA, by far)
STEPS = 64  # new tokens per timed call
MARGIN = 1.05  # the graph loop must win by this much, so that timing noise does not flip it
ALWAYS_XLA = 2**31 - 1  # xla_max_streams when XLA wins at every size measured


def preset():
    """xla_max_streams that TEXTGEN_GENERATION names, or None to measure."""
    setting = os.environ.get("TEXTGEN_GENERATION", "measure").strip().lower()
    if setting == "measure":
        return None
    if setting == "xla":
        return ALWAYS_XLA
    if setting == "graph":
        return 0
    raise UsageError(
        f"TEXTGEN_GENERATION must be measure, xla or graph, got {setting!r}; unset it to measure"
    )


def best_seconds(run, repeats=2):
    """The fastest of `repeats` timed calls of `run`, after one untimed call (tracing, XLA
    compilation for the batch size, caches)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def compare(first, second, min_rounds=3, max_rounds=12, budget=10.0, clock=time.perf_counter):
    """(best seconds of `first`, best seconds of `second`, rounds): the two calls take turns,
    after one untimed call each, until the gap between their best times exceeds the noise.

    The noise of a call is how far its median time lies above its best; on a machine shared with
    other work it grows, and one round's luck could otherwise decide for a whole cache's life.
    The rounds stop once the gap is more than twice the larger noise (at least `min_rounds`),
    after `max_rounds`, or once `budget` seconds have been spent timing; the best times are
    returned either way, and a gap within MARGIN keeps XLA.
    """
    first()
    second()
    times = ([], [])
    started = clock()
    for rounds in range(1, max_rounds + 1):
        for run, record in zip((first, second), times):
            start = clock()
            run()
            record.append(clock() - start)
        if rounds < min_rounds:
            continue
        best = [min(t) for t in times]
        noise = max(float(np.median(t)) / b - 1.0 for t, b in zip(times, best))
        gap = max(best) / min(best) - 1.0
        if gap > 2.0 * noise or clock() - started > budget:
            break
    return min(times[0]), min(times[1]), rounds


def measure(model, precision="float32"):
    """({size: (xla chars/s, graph chars/s)}, xla_max_streams) for `model` (a LanguageModel),
    the graph loop's matmuls in `precision`: sizes are timed from the smallest until the graph
    loop wins."""
    from textgen.network.lean_language_model import LeanLanguageModel, lean_weights

    weights = {name: tf.constant(value) for name, value in lean_weights(model).items()}
    signature = [tf.TensorSpec([None, 1], tf.int32), tf.TensorSpec([], tf.int32)]

    def loop(xla):
        lean = LeanLanguageModel(
            weights, model.cell, model.num_layers, model.hidden_size, xla, precision=precision
        )

        def generate(prime_ids, seed):
            return lean.generate_ids(
                prime_ids, tf.constant(STEPS), tf.constant(1.0), tf.constant(0), seed
            )

        return tf.function(generate, input_signature=signature)

    loops = (loop(True), loop(False))
    rates, limit = {}, ALWAYS_XLA
    for size in SIZES:
        prime = tf.zeros([size, 1], tf.int32)
        xla, graph, _ = compare(*(lambda f=f, p=prime: f(p, tf.constant(0)).numpy() for f in loops))
        rates[size] = (size * STEPS / xla, size * STEPS / graph)
        if rates[size][1] > MARGIN * rates[size][0]:
            limit = size
            break
    return rates, limit


def model_key(model, precision="float32"):
    shape = dict(
        kind="generation",
        cell=model.cell,
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        vocabulary=int(model.vocabulary_size),
    )
    if precision != "float32":  # float32 keeps the key of the entries cached before precision
        shape["precision"] = precision
    return kernel_choice.cache_key(**shape)


def describe(limit):
    if limit == 0:
        return "the graph loop at every batch size"
    if limit >= ALWAYS_XLA:
        return "the XLA-compiled loop at every batch size"
    return f"the XLA-compiled loop below {limit} streams, the graph loop from {limit}"


def xla_max_streams(model, path=None, precision="float32"):
    """The batch size from which `model` generates on the graph loop on this machine, that loop's
    matmuls in `precision`: preset, cached, or measured (a few seconds, once per machine, model
    shape and precision, with one line on stderr)."""
    chosen = preset()
    if chosen is not None:
        return chosen
    path = kernel_choice.cache_path() if path is None else path
    key = model_key(model, precision)
    entry = kernel_choice.read_cache(path).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("xla_max_streams"), int):
        return entry["xla_max_streams"]
    start = time.perf_counter()
    rates, limit = measure(model, precision)
    seconds = time.perf_counter() - start
    measured = "; ".join(
        f"{size} streams: XLA {xla:,.0f}, graph {graph:,.0f} tokens/s"
        for size, (xla, graph) in rates.items()
    )
    print(
        f"textgen: generation takes {describe(limit)} on this machine ({measured}"
        f"{'; the graph loop in bfloat16' if precision == 'bfloat16' else ''}; measured in "
        f"{seconds:.0f} s, cached for later runs)",
        file=sys.stderr,
        flush=True,
    )
    kernel_choice.write_cache(
        path,
        key,
        {
            "xla_max_streams": int(limit),
            "rates": {str(size): [round(r) for r in pair] for size, pair in rates.items()},
        },
    )
    return int(limit)


def as_tensor(limit):
    return tf.constant(np.int32(min(limit, ALWAYS_XLA)))
