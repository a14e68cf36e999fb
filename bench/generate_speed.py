"""Generation speed of the exported SavedModel against the TensorFlow tutorial's per-character loop.

    python bench/generate_speed.py [--length 1000] [--streams 1 64] [--repeats 3] [--paired 9]

The model is the default textgen architecture: a 2 x 256 LSTM with a 64-wide embedding over the
tiny-shakespeare character vocabulary (65 characters). Its weights are Keras' random
initialisation: speed does not depend on the weights, and nothing needs training first.

Two ways to generate `--length` new characters per stream from the prompt "ROMEO:", at
temperature 1 (sampling), with the same model and weights:

- SavedModel: `export_saved_model` to a temporary directory, `tf.saved_model.load`, then ONE call
  of the `generate` signature (everything, the loop included, runs in the graph).
- Tutorial: the loop of https://www.tensorflow.org/text/tutorials/text_generation, a Python
  `for` loop that calls the tutorial's `OneStep.generate_one_step` (a tf.function: strings ->
  ids, one call of the model on the last character with the carried states, categorical draw,
  ids -> strings) once per character.

The SavedModel is exported as `textgen.export` does by default (`--precision auto`): on a CPU
with bfloat16 instructions its graph loop (the one many streams take) runs its matmuls in
bfloat16. Then a float32 export's graph loop is timed beside it ("graph f32").

Each figure is the best of `--repeats` timed runs after one warm-up run (which also pays for
tracing and XLA compilation). The machine may be shared, so absolute numbers are noisy; the
ratios, taken in the same run, are the comparison.

"% limit" is the SavedModel's rate (the step's matmul FLOPs per second) against the float32 matmul
limit at the step's own shape, streams x 256 x 1024 (bench/limits.py): the larger of numpy's
rate in a subprocess without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (which halve current
OpenBLAS's rate, issue 28; this process keeps them) and `tf.matmul`'s, chained in a tf.function.
Where the CPU has bf16 instructions, "% bf16" is against `tf.matmul`'s bfloat16 rate there.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as textgen sets it (textgen/_quiet_import.py)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from host import describe_host  # noqa: E402  (bench/host.py, beside this script)
from limits import Limits  # noqa: E402  (bench/limits.py)

from textgen.config import DEFAULT_DATA  # noqa: E402
from textgen.corpus.vocabulary import Vocabulary  # noqa: E402
from textgen.generation import loop_choice  # noqa: E402
from textgen.generation.loop_choice import best_seconds  # noqa: E402
from textgen.generation.saved_model import export_saved_model  # noqa: E402
from textgen.network.language_model import LanguageModel  # noqa: E402
from textgen.network.precision import resolve as resolve_precision  # noqa: E402

PROMPT = "ROMEO:"
TARGETS = {1: 10_000}  # chars/s the issues ask for; 64 streams: 80% of the limit at its shape


class OneStep(tf.Module):
    """The tutorial's OneStep on a textgen LanguageModel (whose call takes and returns states)."""

    def __init__(self, model, temperature=1.0):
        super().__init__()
        self.model = model
        self.temperature = temperature
        tokens = model.vocabulary.tokens
        self.ids_from_chars = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(tokens), tf.range(len(tokens), dtype=tf.int64)
            ),
            -1,
        )
        self.chars_from_ids = tf.constant(tokens)

    @tf.function
    def generate_one_step(self, inputs, states):
        input_chars = tf.strings.unicode_split(inputs, "UTF-8")
        input_ids = self.ids_from_chars.lookup(input_chars).to_tensor()
        predicted_logits, states = self.model(input_ids, states)
        predicted_logits = predicted_logits[:, -1, :] / self.temperature
        predicted_ids = tf.squeeze(tf.random.categorical(predicted_logits, num_samples=1), -1)
        return tf.gather(self.chars_from_ids, predicted_ids), states


def tutorial_generate(one_step, model, streams, length):
    states = model.initial_states(streams)
    next_char = tf.constant([PROMPT] * streams)
    result = [next_char]
    for _ in range(length):
        next_char, states = one_step.generate_one_step(next_char, states)
        result.append(next_char)
    return tf.strings.join(result).numpy()


def random_shakespeare_model(data):
    with open(data, encoding="utf-8") as f:
        vocabulary = Vocabulary.from_characters(f.read())
    keras.utils.set_random_seed(0)
    model = LanguageModel(vocabulary, cell="lstm", num_layers=2, hidden_size=256, embedding_size=64)
    model.build()
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help="corpus whose characters are the vocabulary"
    )
    parser.add_argument(
        "--length", type=int, default=1000, help="new characters per stream (default: 1000)"
    )
    parser.add_argument(
        "--streams",
        type=int,
        nargs="+",
        default=[1, 64],
        help="batch sizes to measure (default: 1 64)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per figure; the best counts (default: 3)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature for both (default: 1.0; 0 is argmax for the "
        "SavedModel, near-argmax for the tutorial loop)",
    )
    parser.add_argument(
        "--paired",
        type=int,
        default=9,
        help="generation calls each paired with a timing of the matmul limit (default: 9)",
    )
    args = parser.parse_args(argv)

    print(describe_host())
    model = random_shakespeare_model(args.data)
    # What a default export does: measure (or read from the cache) from how many streams the
    # graph loop beats the XLA one on this machine; the SavedModel carries the answer.
    os.environ.pop("TEXTGEN_GENERATION", None)
    # And in the precision a default export takes: bfloat16 in the graph loop where the CPU has
    # the instructions (textgen.network.precision); a float32 export is timed beside it.
    precision = resolve_precision("auto")
    limit = loop_choice.xla_max_streams(model, precision=precision)
    print(f"auto: generation takes {loop_choice.describe(limit)}; the graph loop in {precision}")
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "saved_model")
        start = time.perf_counter()
        export_saved_model(model, out)
        float32 = None
        if precision != "float32":
            model.generation_precision = "float32"
            export_saved_model(model, os.path.join(directory, "float32"))
            model.generation_precision = "auto"
            float32 = tf.saved_model.load(os.path.join(directory, "float32"))
            float32.xla_max_streams.assign(loop_choice.as_tensor(0))
        print(
            f"exported in {time.perf_counter() - start:.1f} s; "
            f"{model.count_params():,} parameters, vocabulary {model.vocabulary_size}; "
            f"{os.cpu_count()} CPUs; TensorFlow {tf.__version__}"
        )
        loaded = tf.saved_model.load(out)
        generate = loaded.signatures["generate"]
        one_step = OneStep(model, temperature=max(args.temperature, 1e-6))
        # The same SavedModel with its crossover forced, so that both loops are timed side by
        # side at every batch size (the variable is read at each call).
        loops = {"auto": limit, "XLA loop": loop_choice.ALWAYS_XLA, "graph loop": 0}

        rows, paired = [], {}
        units = model.hidden_size
        shape_of = {size: (size, units, 4 * units) for size in args.streams}
        limits = Limits([(f"{size} streams", *shape_of[size]) for size in args.streams])
        limits.measure(seconds=0.5)
        for streams in args.streams:
            inputs = dict(
                prompt=tf.constant([PROMPT] * streams),
                length=tf.constant(len(PROMPT) + args.length),
                temperature=tf.constant(args.temperature),
                top_k=tf.constant(0),
                seed=tf.constant(0),
            )
            seconds = {}
            for name, crossover in loops.items():
                loaded.xla_max_streams.assign(loop_choice.as_tensor(crossover))
                start = time.perf_counter()
                generate(**inputs)
                first_call = time.perf_counter() - start
                seconds[name] = best_seconds(
                    lambda inputs=inputs: generate(**inputs)["text"].numpy(), args.repeats
                )
                if name == "auto":
                    auto_first_call = first_call
            loaded.xla_max_streams.assign(loop_choice.as_tensor(limit))
            if float32 is not None:
                seconds["graph f32"] = best_seconds(
                    lambda inputs=inputs: float32.signatures["generate"](**inputs)["text"].numpy(),
                    args.repeats,
                )
            # Paired: each generation call of auto's path is followed by the limit's engines
            # (numpy unset, tf float32, numpy as set), each timed over about as long, and the
            # ratio of the call's rate to the largest of theirs is kept; the median ratio is then
            # immune to the host's busy and quiet moments, which a best-of on each side is not.
            ratios = []
            for _ in range(args.paired):
                start = time.perf_counter()
                generate(**inputs)["text"].numpy()
                elapsed = time.perf_counter() - start
                rate = streams * args.length * flops_per_character(model) / elapsed
                ratios.append(rate / limits.paired_limit(shape_of[streams], elapsed))
            paired[streams] = sorted(ratios)
            seconds["tutorial"] = best_seconds(
                lambda streams=streams: tutorial_generate(one_step, model, streams, args.length),
                args.repeats,
            )
            rows.append((streams, auto_first_call, seconds))
            # The limit is taken after each row as well as before, and the best kept: a busy
            # moment on a shared machine then does not stand for the machine's rate.
            limits.measure(seconds=0.5)

    characters = args.length
    flops = flops_per_character(model)
    bf16 = limits.bf16
    graph_name = "graph loop" if precision == "float32" else "graph bf16"
    print(
        f"\n{'case':<20}{'auto chars/s':>14}{'XLA loop':>11}{graph_name:>12}"
        + (f"{'graph f32':>11}" if precision != "float32" else "")
        + f"{'tutorial':>10}"
        f"{'auto/tut.':>10}{'target':>9}{'GFLOP/s':>9}{'% limit':>9}"
        + (f"{'% bf16':>8}" if bf16 else "")
        + f"{'first call':>12}"
    )
    for streams, first_call, seconds in rows:
        rate = {name: streams * characters / value for name, value in seconds.items()}
        target = TARGETS.get(streams)
        achieved = rate["auto"] * flops
        shape = shape_of[streams]
        print(
            f"{f'{streams} x {characters} chars':<20}{rate['auto']:>14,.0f}"
            f"{rate['XLA loop']:>11,.0f}{rate['graph loop']:>12,.0f}"
            + (f"{rate['graph f32']:>11,.0f}" if "graph f32" in rate else "")
            + f"{rate['tutorial']:>10,.0f}"
            f"{rate['auto'] / rate['tutorial']:>9.1f}x{f'{target:,}' if target else '-':>9}"
            f"{achieved / 1e9:>9.1f}{100 * achieved / limits.limit(shape):>8.0f}%"
            + (f"{100 * achieved / limits.bf16_limit(shape):>7.0f}%" if bf16 else "")
            + f"{first_call:>11.2f}s"
        )
    print(
        f"\nThe step's matmuls cost {flops / 1e6:.2f} MFLOP per character, so a target of T "
        f"chars/s needs T x {flops / 1e6:.2f} MFLOP/s of float32 compute (GFLOP/s column: what "
        "the SavedModel achieved; 'first call' includes XLA compilation for that batch size)."
    )
    print(
        "% limit: against the float32 matmul limit at the step's own shape, streams x "
        f"{units} x {4 * units}, measured in this run (bench/limits.py; "
        f"{limits.legend()}; GFLOP/s):"
    )
    print("\n".join(limits.describe()))
    print("\n".join(limits.table()))
    print(
        "Paired (each generation call of auto's path against the limit's engines right after "
        f"it, each for as long): {args.paired} pairs per row; % of limit, median and range:"
    )
    for streams, ratios in paired.items():
        median = 100 * ratios[len(ratios) // 2]
        print(
            f"  {streams} streams: median {median:.0f}% (min {100 * ratios[0]:.0f}%, "
            f"max {100 * ratios[-1]:.0f}%)"
        )
    limits.close()
    return 0


def flops_per_character(model):
    """Multiply-adds of one step, x 2: each layer's [x, h] @ [kernel; recurrent_kernel] (layer 0's
    input side is a table lookup) and the output layer."""
    units, gates = model.hidden_size, 4 if model.cell in ("lstm", "gru") else 1
    recurrent = units * gates * units + (model.num_layers - 1) * 2 * units * gates * units
    return 2 * (recurrent + units * model.vocabulary_size)


if __name__ == "__main__":
    sys.exit(main())
