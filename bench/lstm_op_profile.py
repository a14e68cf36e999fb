"""Where the C++ LSTM ops' time goes: each op against its own matrix products, in one process.

    .venv/bin/python bench/lstm_op_profile.py [--steps 100] [--batch 32] [--hidden-size 256]

Times, for one batch part of the default training step (T steps x B streams x H units):

- `TextgenLstmForward` and `TextgenLstmBackward` (textgen/network/lstm_recurrence.cc), whose
per-step
  products run on Eigen inside the op: T products [B, H] x [H, 4H] forward, T products
  [B, 4H] x [4H, H] backward;
- the same T products alone, as a chain of dependent `tf.matmul`s in a tf.while_loop (oneDNN's
  kernels where TensorFlow uses them) and as numpy `a @ b` (OpenBLAS);
- the same recurrence on TensorFlow ops (`fused_kernels.lstm_sequence`, a tf.while_loop).

The gap between an op and its products alone is what the op's gate math and launches cost; the
gap between Eigen's products (inside the op) and tf.matmul's is what routing the products
through TensorFlow's GEMM could gain. Run it with TensorFlow on one intra-op thread
(`--threads 1`, what each batch part gets in training) and on all cores.

Whether a bfloat16 path inside the ops would pay (issue 28): the same product chains in bfloat16,
through oneDNN (`tf.matmul`, TF_ENABLE_ONEDNN_OPTS=1) and through Eigen's contraction (a
subprocess with TF_ENABLE_ONEDNN_OPTS=0, where `tf.matmul` runs on Eigen, as the ops' products
do), float32 and bfloat16 each.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

# TF_ENABLE_ONEDNN_OPTS must be set before TensorFlow loads: the Eigen rows run in a child.
EIGEN_CHILD = "TEXTGEN_PROFILE_EIGEN_CHILD"


def best(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32, help="streams of one batch part")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=1, help="TensorFlow intra-op threads (0: its default)"
    )
    args = parser.parse_args(argv)

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from host import describe_host

    from textgen.network import fused_kernels, native_ops

    print(describe_host())
    print(f"TensorFlow {tf.__version__}; intra-op threads {args.threads or 'default'}")
    ops = native_ops.lstm_ops()
    if ops is None:
        print("the C++ ops did not load here (see the note above); nothing to profile")
        return 1
    T, B, H = args.steps, args.batch, args.hidden_size
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.standard_normal((T * B, 4 * H), dtype=np.float32) * 0.1)
    rows = tf.reshape(tf.range(T * B, dtype=tf.int32), [T, B])
    bias = tf.zeros([4 * H])
    h0 = tf.zeros([B, H])
    c0 = tf.zeros([B, H])
    kernel = tf.constant(rng.standard_normal((H, 4 * H), dtype=np.float32) / np.float32(np.sqrt(H)))
    d_hs = tf.constant(rng.standard_normal((T, B, H), dtype=np.float32))

    # The ops take their tensors as arguments (autograph off): the generated op wrappers do not
    # go through autograph's conversion.
    forward_op = tf.function(lambda *a: ops.textgen_lstm_forward(*a), autograph=False)
    backward_op = tf.function(lambda *a: ops.textgen_lstm_backward(*a), autograph=False)

    def forward():
        return forward_op(inputs, rows, bias, h0, c0, kernel)

    hs, cs, gates = forward()

    def backward():
        return backward_op(gates, cs, c0, kernel, d_hs, h0, c0, inputs, rows)

    def matmul_chain(m, k, n, dtype=tf.float32):
        a = tf.cast(tf.constant(rng.standard_normal((m, k), dtype=np.float32) * 0.01), dtype)
        b = tf.cast(tf.constant(rng.standard_normal((k, n), dtype=np.float32) * 0.01), dtype)

        @tf.function
        def chain():
            def body(i, acc):
                out = tf.matmul(a + acc, b)
                return i + 1, out[:1, :1] * 0.0

            return tf.while_loop(lambda i, _: i < T, body, (0, tf.zeros([1, 1], dtype)))[1]

        # One traced function, timed after best's untimed first call (which traces it).
        return lambda: chain().numpy()

    flops_forward = 2.0 * T * B * H * 4 * H
    if os.environ.get(EIGEN_CHILD):
        for dtype in (tf.float32, tf.bfloat16):
            for side, shape in (("forward", (B, H, 4 * H)), ("backward", (B, 4 * H, H))):
                seconds = best(matmul_chain(*shape, dtype), args.repeats)
                print(f"eigen {dtype.name} {side} {flops_forward / seconds / 1e9:.1f}")
        return 0

    def numpy_chain(m, k, n):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)

        def chain():
            for _ in range(T):
                a @ b

        return chain

    x_proj = tf.reshape(inputs, [T, B, 4 * H])
    permuted = tf.gather(kernel, fused_kernels.lstm_gate_permutation(H), axis=1)

    @tf.function
    def tf_ops_forward():
        return fused_kernels.lstm_sequence(x_proj, h0, c0, permuted)

    rows_out = [
        (
            "TextgenLstmForward (Eigen products + gates)",
            best(lambda: forward()[0].numpy(), args.repeats),
        ),
        (
            "  its products alone, tf.matmul chain",
            best(matmul_chain(B, H, 4 * H), args.repeats),
        ),
        ("  its products alone, numpy chain", best(numpy_chain(B, H, 4 * H), args.repeats)),
        (
            "  its products alone in bf16, tf.matmul (oneDNN)",
            best(matmul_chain(B, H, 4 * H, tf.bfloat16), args.repeats),
        ),
        (
            "  the same forward on TF ops (while_loop)",
            best(lambda: tf_ops_forward()[0].numpy(), args.repeats),
        ),
        (
            "TextgenLstmBackward (Eigen products + gates)",
            best(lambda: backward()[0].numpy(), args.repeats),
        ),
        (
            "  its products alone, tf.matmul chain",
            best(matmul_chain(B, 4 * H, H), args.repeats),
        ),
        ("  its products alone, numpy chain", best(numpy_chain(B, 4 * H, H), args.repeats)),
        (
            "  its products alone in bf16, tf.matmul (oneDNN)",
            best(matmul_chain(B, 4 * H, H, tf.bfloat16), args.repeats),
        ),
    ]
    print(
        f"\n{T} steps x {B} streams x {H} units; {flops_forward / 1e6:.0f} MFLOP of products per op"
    )
    print(f"  {'':<48}{'ms':>8}{'GFLOP/s of the products':>26}")
    for label, seconds in rows_out:
        print(f"  {label:<48}{seconds * 1e3:>8.2f}{flops_forward / seconds / 1e9:>26.1f}")
    eigen_rows(argv)
    return 0


def eigen_rows(argv):
    """The products on Eigen (oneDNN off, in a child process), float32 and bfloat16."""
    import subprocess

    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", **{EIGEN_CHILD: "1"})
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:])],
        env=env,
        capture_output=True,
        text=True,
    )
    rates = {}
    for line in child.stdout.splitlines():
        if line.startswith("eigen "):
            _, dtype, side, rate = line.split()
            rates[(dtype, side)] = rate
    print("\nEigen's products (TF_ENABLE_ONEDNN_OPTS=0, tf.matmul runs Eigen's contraction, as the")
    print("C++ ops' products are Eigen's), GFLOP/s:")
    print(f"  {'':<20}{'float32':>10}{'bfloat16':>10}")
    for side in ("forward", "backward"):
        print(
            f"  {side + ' products':<20}{rates.get(('float32', side), '?'):>10}"
            f"{rates.get(('bfloat16', side), '?'):>10}"
        )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
