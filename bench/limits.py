"""The float32 (and bfloat16) matmul limit of this machine at given shapes: the benchmarks'
denominator for "% of limit".

    .venv/bin/python bench/limits.py [--rounds 5] [--seconds 0.25]

Why not numpy's rate alone (issue 28): these machines set OPENBLAS_CORETYPE=Haswell and
OPENBLAS_L2_SIZE, because older OpenBLAS builds crash on some CPUs without them. The OpenBLAS
inside current numpy then runs its Haswell kernels at about half its speed (AMD EPYC, 2026-12-02:
2048^3 209 against 403 GFLOP/s; 64x256x1024 190 against 242), so numpy's rate in a benchmark's
own process is no measure of the machine (bench/train_throughput.py once printed "143% of
sgemm"). At each shape (m, k, n) this measures:

- numpy as set: numpy's best `a @ b` rate (into a preallocated output) in this process, with
  the environment as it is;
- numpy unset: the same in a subprocess whose environment lacks OPENBLAS_CORETYPE and
  OPENBLAS_L2_SIZE. Only for this reference: the benchmark's own process, the tests and CI keep
  the variables. The subprocess reports which BLAS ran (threadpoolctl: library, version, kernel,
  threads), and the benchmarks print it;
- tf float32: `tf.matmul`'s best float32 rate, as a chain of dependent matmuls inside one
  `tf.function` (a `tf.while_loop`), so that per-call overhead does not hide the rate;
- tf bfloat16: the same in bfloat16, where the CPU has bf16 instructions (avx512_bf16 or
  amx_bf16 in /proc/cpuinfo).

The limit at a shape is the larger of "numpy unset" and "tf float32", or "numpy as set" where that
is higher still: where the variables are set it is the crippled rate and lower, where they are not
it is the same BLAS as "numpy unset" timed again, and a limit below a rate measured in the same run
would be no limit. The bf16 limit is "tf bfloat16". Each rate is the best of all calls timed
(`Limits.measure` is called once per round, and benchmarks call it between their own contenders, so
that it sees the same machine load).

Benchmarks whose process changes TensorFlow's threads (train_throughput.py gives each batch part
one intra-op thread) measure `tf.matmul` in a second subprocess on TensorFlow's default threads
(`Limits(..., tf_here=False)`), since a one-thread rate is no limit of the machine.
"""

import argparse
import atexit
import json
import os
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as textgen sets it (textgen/_quiet_import.py)

from host import cpu_info, describe_host  # noqa: E402  (bench/host.py, beside this script)

# What the numpy reference runs without (issue 28); nothing else is removed.
CRIPPLING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The shapes of the main table: a large square one, and the 2x256 LSTM's recurrent step (batch
# 64), its input projection (64 x 100 tokens) and one batch part's step (32 streams).
SHAPES = (
    ("square", 2048, 2048, 2048),
    ("recurrent step", 64, 256, 1024),
    ("input projection", 6400, 256, 1024),
    ("batch part's step", 32, 256, 1024),
)
# The limit is the largest of these (numpy as set only ever adds where the variables are unset).
LIMIT_COLUMNS = ("numpy unset", "tf float32", "numpy as set")


def has_bf16(flags=None):
    """Whether the CPU has bf16 instructions (avx512_bf16 or amx_bf16)."""
    flags = cpu_info()["flags"] if flags is None else flags
    return any(flag in flags for flag in BF16_FLAGS)


def reference_env(environ=None):
    """The environment of the numpy reference: this one without OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE."""
    environ = os.environ if environ is None else environ
    return {key: value for key, value in environ.items() if key not in CRIPPLING}


def describe_variables(environ=None):
    environ = os.environ if environ is None else environ
    return ", ".join(f"{name}={environ.get(name, '(unset)')}" for name in CRIPPLING)


def describe_blas():
    """numpy's BLAS as threadpoolctl sees it: 'openblas 0.3.31, kernel SkylakeX, 2 threads'."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS unknown (threadpoolctl is not installed)"
    blas = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    # Other libraries (PyTorch, TensorFlow) may bring their own: numpy's is the one in numpy.libs.
    blas = [info for info in blas if "numpy" in info.get("filepath", "")] or blas
    return (
        "; ".join(
            f"{info.get('internal_api')} {info.get('version')}, kernel "
            f"{info.get('architecture') or info.get('corename') or '?'}, "
            f"{info.get('num_threads')} threads"
            for info in blas
        )
        or "no BLAS found by threadpoolctl"
    )


def operands(m, k, n):
    rng = np.random.default_rng(0)
    return rng.random((m, k), dtype=np.float32) / k, rng.random((k, n), dtype=np.float32)


def flops_of(shape):
    m, k, n = shape
    return 2.0 * m * k * n


def chain_length(shape, flops=1e9):
    """Matmuls per timed call: about `flops` of them (1 GFLOP: a few milliseconds)."""
    return max(1, int(flops // flops_of(shape)))


# ----------------------------------------------------------------- engines --
class Engine:
    """Times chains of `run(shape, chain)`: best and mean rates (FLOP/s)."""

    def prepare(self, shape):
        self.run(shape, 1)

    def best(self, shape, number=2, seconds=0.0):
        """The best rate of at least `number` timed calls, going on for `seconds` in all."""
        chain = chain_length(shape)
        best, calls = 0.0, 0
        deadline = time.perf_counter() + seconds
        while calls < number or time.perf_counter() < deadline:
            start = time.perf_counter()
            self.run(shape, chain)
            best = max(best, chain * flops_of(shape) / (time.perf_counter() - start))
            calls += 1
        return best

    def mean(self, shape, seconds, chain=1):
        """The mean rate of calls of `chain` matmuls each, over `seconds`."""
        done, start = 0, time.perf_counter()
        while True:
            self.run(shape, chain)
            done += chain
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return done * flops_of(shape) / elapsed


class NumpyEngine(Engine):
    """`np.matmul(a, b, out=c)`: the BLAS's own rate, without allocating c each time."""

    def __init__(self):
        self.cases = {}

    def run(self, shape, chain):
        if shape not in self.cases:
            a, b = operands(*shape)
            self.cases[shape] = (a, b, np.empty((shape[0], shape[2]), np.float32))
        a, b, out = self.cases[shape]
        for _ in range(chain):
            np.matmul(a, b, out=out)


class TfEngine(Engine):
    """`tf.matmul` in `dtype`, `chain` dependent matmuls in one tf.function call: each matmul
    depends on the previous one through a zero-scaled term, so none can be skipped or merged;
    the chain's length is a tensor, so one trace serves every length."""

    def __init__(self, dtype="float32"):
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        self.tf, self.dtype = tf, tf.as_dtype(dtype)
        self.cases = {}

    def _case(self, shape):
        if shape not in self.cases:
            tf, dtype = self.tf, self.dtype
            a, b = operands(*shape)
            ta, tb = tf.cast(tf.constant(a), dtype), tf.cast(tf.constant(b), dtype)

            @tf.function
            def chain_of(count, ta=ta, tb=tb):
                def body(i, acc):
                    out = tf.matmul(ta + acc, tb)
                    return i + 1, out[:1, :1] * tf.constant(0, dtype)

                start = (tf.constant(0), tf.zeros([1, 1], dtype))
                return tf.while_loop(lambda i, _: i < count, body, start)[1]

            self.cases[shape] = chain_of
        return self.cases[shape]

    def run(self, shape, chain):
        self._case(shape)(self.tf.constant(chain, self.tf.int32)).numpy()

    def describe(self):
        tf = self.tf
        return (
            f"TensorFlow {tf.__version__} (TF_ENABLE_ONEDNN_OPTS="
            f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}), threads intra "
            f"{tf.config.threading.get_intra_op_parallelism_threads()} inter "
            f"{tf.config.threading.get_inter_op_parallelism_threads()} (0 = default)"
        )


def make_engine(name):
    return NumpyEngine() if name == "numpy" else TfEngine(name)


class Worker:
    """A subprocess running `limits.py --worker` with environment `env`, whose engines time
    themselves there; requests and answers are JSON lines on its stdin and stdout."""

    def __init__(self, env):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        atexit.register(self.close)

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench/limits.py worker ended (exit {self.process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"bench/limits.py worker: {answer['error']}")
        return answer["result"]

    def engine(self, name):
        return RemoteEngine(self, name)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


class RemoteEngine:
    def __init__(self, worker, name):
        self.worker, self.name = worker, name

    def prepare(self, shape):
        self.worker.ask(op="prepare", engine=self.name, shape=list(shape))

    def best(self, shape, number=2, seconds=0.0):
        return self.worker.ask(
            op="best", engine=self.name, shape=list(shape), number=number, seconds=seconds
        )

    def mean(self, shape, seconds, chain=1):
        return self.worker.ask(
            op="mean", engine=self.name, shape=list(shape), seconds=seconds, chain=chain
        )

    def describe(self):
        return self.worker.ask(op="describe", engine=self.name)


def serve_worker():
    """`limits.py --worker`: answers Worker's requests until its stdin closes."""
    engines = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            name = request["engine"]
            if name not in engines:
                engines[name] = make_engine(name)
            engine, op = engines[name], request["op"]
            shape = tuple(request.get("shape", ()))
            if op == "prepare":
                result = engine.prepare(shape)
            elif op == "best":
                result = engine.best(shape, request["number"], request["seconds"])
            elif op == "mean":
                result = engine.mean(shape, request["seconds"], request["chain"])
            elif op == "describe":
                result = describe_blas() if name == "numpy" else engine.describe()
            else:
                raise ValueError(f"unknown op {op!r}")
            answer = {"result": result}
        except Exception as error:  # reported to the parent, which raises
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)
    return 0


# ------------------------------------------------------------------ limits --
class Limits:
    """Best rates (FLOP/s) at each of `shapes` ((label, m, k, n) tuples), per column:

    "numpy as set" (this process), "numpy unset" (a subprocess without OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE), "tf float32" and, where the CPU has bf16 instructions, "tf bfloat16" (in
    this process, or with `tf_here=False` in a subprocess on TensorFlow's default threads).
    `limit(shape)` is the largest of "numpy unset", "tf float32" and "numpy as set" (see the
    module's docstring); `bf16_limit(shape)` is "tf bfloat16" (None without bf16). Every `measure()`
    call times each column at each shape again and keeps the best."""

    def __init__(self, shapes, tf_here=True, bf16=None):
        self.labels = {(m, k, n): label for label, m, k, n in shapes}
        self.bf16 = has_bf16() if bf16 is None else bf16
        self.reference = Worker(reference_env())
        self.engines = {
            "numpy as set": NumpyEngine(),
            "numpy unset": self.reference.engine("numpy"),
        }
        dtypes = ("float32", "bfloat16") if self.bf16 else ("float32",)
        if tf_here:
            self.tf_worker = None
            self.engines.update({f"tf {dtype}": TfEngine(dtype) for dtype in dtypes})
        else:
            self.tf_worker = Worker(dict(os.environ))
            self.engines.update({f"tf {dtype}": self.tf_worker.engine(dtype) for dtype in dtypes})
        for shape in self.labels:
            for engine in self.engines.values():
                engine.prepare(shape)
        self.rates = {shape: dict.fromkeys(self.engines, 0.0) for shape in self.labels}

    def measure(self, number=2, seconds=0.0):
        for shape, rates in self.rates.items():
            for column, engine in self.engines.items():
                rates[column] = max(rates[column], engine.best(shape, number, seconds))

    def limit(self, shape):
        return max(self.rates[tuple(shape)][column] for column in LIMIT_COLUMNS)

    def bf16_limit(self, shape):
        return self.rates[tuple(shape)]["tf bfloat16"] if self.bf16 else None

    def best_limit(self):
        """(rate, shape) of the highest float32 limit over the shapes."""
        return max((self.limit(shape), shape) for shape in self.rates)

    def best_bf16_limit(self):
        if not self.bf16:
            return None, None
        return max((self.bf16_limit(shape), shape) for shape in self.rates)

    def paired_limit(self, shape, seconds):
        """The float32 limit right now: the largest of the limit's columns' mean rates, each over
        about `seconds` (to set against a call of that length timed just before), in calls of at
        most a tenth of it at the best rate measured so far."""
        shape, rates = tuple(shape), []
        for column in LIMIT_COLUMNS:
            best = self.rates[shape][column] or 1e11
            chain = max(1, min(chain_length(shape), int(best * seconds / 10 / flops_of(shape))))
            rates.append(self.engines[column].mean(shape, seconds, chain))
        return max(rates)

    def describe(self):
        """Lines naming what each column ran on."""
        tf_engine = self.engines["tf float32"]
        where = "this process" if self.tf_worker is None else "a subprocess"
        return [
            f"numpy {np.__version__} as set (this process: {describe_variables()}): "
            f"{describe_blas()}",
            f"numpy {np.__version__} unset (a subprocess without {' and '.join(CRIPPLING)}): "
            f"{self.engines['numpy unset'].describe()}",
            f"tf.matmul in {where}: {tf_engine.describe()}"
            + ("" if self.bf16 else "; no bf16 instructions on this CPU, no bfloat16 limit"),
        ]

    def table(self):
        """The rates in GFLOP/s, one line per shape."""
        columns = list(self.engines)
        header = f"  {'shape':<24}{'m x k x n':>16}" + "".join(f"{c:>14}" for c in columns)
        lines = [header + f"{'limit':>9}"]
        for shape, rates in self.rates.items():
            m, k, n = shape
            lines.append(
                f"  {self.labels[shape]:<24}{f'{m}x{k}x{n}':>16}"
                + "".join(f"{rates[c] / 1e9:>14.1f}" for c in columns)
                + f"{self.limit(shape) / 1e9:>9.1f}"
            )
        return lines

    def legend(self):
        return (
            "limit: the larger of 'numpy unset' and 'tf float32' at that shape (or 'numpy as set'"
            " where higher still)" + ("; bf16 limit: 'tf bfloat16'" if self.bf16 else "")
        )

    def close(self):
        for worker in (self.reference, self.tf_worker):
            if worker is not None:
                worker.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measurement rounds (default: 5)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.25,
        help="timing per column, shape and round; the best call counts (default: 0.25)",
    )
    args = parser.parse_args(argv)
    print(describe_host())
    start = time.perf_counter()
    limits = Limits(SHAPES)
    for line in limits.describe():
        print(line)
    for _ in range(args.rounds):
        limits.measure(seconds=args.seconds)
    print(
        f"float32 and bfloat16 matmul, best call of {args.rounds} rounds x {args.seconds} s "
        "per column and shape (GFLOP/s):"
    )
    for line in limits.table():
        print(line)
    print(limits.legend())
    print(f"({time.perf_counter() - start:.0f} s)")
    limits.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(serve_worker())
    sys.exit(main())
