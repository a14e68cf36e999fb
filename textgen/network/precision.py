"""bfloat16 matmuls with float32 everything else: what `--precision` switches.

Under "bfloat16" the recurrent kernels and the output layer run their matrix products on
bfloat16 copies of the operands (oneDNN accumulates in float32 and rounds the product to
bfloat16); the weights stay float32 variables (the master copy the optimizer updates, and what
checkpoints and SavedModels hold), and the gate non-linearities, the cell state, the softmax, the
loss and the optimizer stay float32. So a checkpoint does not know which precision wrote it, and a
run resumes under either.

Keras' own `mixed_bfloat16` policy is not used: it makes the layers' outputs bfloat16 (the cell
state and the softmax too), and its LSTM falls back or fails on the CPU (tensorflow #57411,
#50282).

Whether bfloat16 pays is a property of the host: with native bf16 instructions (AVX512_BF16,
AMX, Arm's BF16) oneDNN's bfloat16 matmul runs at 1.5-4x its float32 rate at the model's shapes;
without them it is emulated and slower. For generation `auto` (`resolve`) therefore takes
bfloat16 only where `native_bfloat16()` holds; for training it is float32 for now
(`AUTO_TRAINING`, below).
"""

import tensorflow as tf

from textgen.network import native_ops

PRECISIONS = ("auto", "float32", "bfloat16")
CPUINFO = "/proc/cpuinfo"
# The /proc/cpuinfo flags of instructions that compute in bfloat16 (x86: AVX512_BF16, AMX-BF16;
# Arm: BF16).
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def native_bfloat16(flags=None):
    """Whether this CPU has bfloat16 instructions (from /proc/cpuinfo; False where it cannot
    tell)."""
    flags = (native_ops._cpu_flags() if flags is None else flags).split()
    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)


def check(precision):
    """The precision, or ValueError naming the allowed ones."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def operand(tensor, precision):
    """`tensor` as a matmul operand in `precision` ("float32" or "bfloat16"): cast once outside
    a loop, so a step does not cast its weights again."""
    tensor = tf.convert_to_tensor(tensor)
    return tf.cast(tensor, tf.bfloat16) if precision == "bfloat16" else tensor


def matmul(a, b, precision="float32", **options):
    """tf.matmul in `precision`, float32 out. Operands already cast by `operand` are not cast
    again."""
    if precision != "bfloat16":
        return tf.matmul(a, b, **options)
    product = tf.matmul(operand(a, precision), operand(b, precision), **options)
    return tf.cast(product, tf.float32)


# What training computes in under --precision auto. bfloat16 trains 1.4-1.6x faster on a CPU with
# the instructions and ends within 0.0033 nats/char of float32 at an equal number of steps, but
# the default model (2x256, dropout 0.1) turns the extra steps into overfitting: in 10 minutes it
# ended 0.014 nats/char worse than float32 (bench/README.md, "bfloat16"). So auto trains in
# float32 until the defaults spend the speed on a model that can use it; --precision bfloat16
# is for larger models (2x384 with dropout 0.3 was better in bfloat16 than the float32 default).
AUTO_TRAINING = "float32"


def training_precision(precision):
    """The precision a training run's kernels are measured and run in for `--precision`."""
    check(precision)
    return AUTO_TRAINING if precision == "auto" else precision


def resolve(precision):
    """The precision a run computes in: "bfloat16" where asked for, or for "auto" where the CPU
    has bfloat16 instructions; else "float32"."""
    check(precision)
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return precision


# The same test as `native_bfloat16`, as a regular expression over /proc/cpuinfo.
_FLAGS_PATTERN = r"(?s).*\b(" + "|".join(NATIVE_BFLOAT16_FLAGS) + r")\b.*"


def native_bfloat16_tensor(cpuinfo=CPUINFO):
    """`native_bfloat16()` as a graph computation, for a SavedModel that must decide on the
    machine it runs on, without textgen: a scalar bool tensor, True where the file `cpuinfo`
    (a string or string tensor; /proc/cpuinfo) names bfloat16 instructions, False where it does
    not or does not exist (macOS, Windows)."""
    files = tf.io.matching_files(cpuinfo)
    return tf.cond(
        tf.size(files) > 0,
        lambda: tf.strings.regex_full_match(tf.io.read_file(files[0]), _FLAGS_PATTERN),
        lambda: tf.constant(False),
    )
