"""Training throughput of the char-rnn LSTM: characters/s and achieved FLOP/s, side by side.

Run (after `pip install -e .[bench]`, which also brings the optional PyTorch reference):

    .venv/bin/python bench/train_throughput.py
    .venv/bin/python bench/train_throughput.py --steps 10 --repeats 5 --hidden-size 256

In one process, on the embedded tiny-shakespeare corpus (vocabulary 65), it times:

- ours, default: what `textgen.train` runs with `--fused auto`. It measures the kernels below
  on this machine (or reads the answer it cached, `textgen.network.kernel_choice`) and trains on the
  fastest; its "recurrent kernel:" line is printed first, and the row names the choice;
- ours, C++ ops: the project's real training step (`TextTrainer.train_step`: model(inputs, states,
  training=True), sparse softmax cross-entropy, Adam with global-norm clipping) on the model from
  `LanguageModel.from_train_config` with the lean CPU kernels (`--fused on`: textgen's C++ LSTM ops,
  built on first use by `textgen.network.native_ops`, with layer 1's input projection looked up in
  embeddings @ kernel) and the default `--batch-parts` (one group of streams per core, run as
  parallel branches with one TensorFlow thread each), states carried from batch to batch as in
  stateful training, dropout 0 as in the PyTorch loop. The thread setting is process-wide, so
  `tf.matmul`'s limit below is measured in another process. FLOP/s are the model's nominal FLOPs
  (the formula printed first) over time, for every contender alike; the last line also gives
  ours on the FLOPs it really executes;
- ours on TF ops only: the same step traced with textgen's C++ LSTM ops switched off
  (`native_ops.disabled()`), i.e. what a machine without a C++ compiler runs;
- ours, C++ ops bf16 and TF ops bf16 (where the CPU has bfloat16 instructions; `--no-bf16`
  skips them): the same step under `--precision bfloat16 --fused on`, on the C++ ops (the
  matmuls outside the op in bf16) and on TF ops (every matmul in bf16);
- stock Keras: the same step and model with `--fused off` (the stock `keras.layers.LSTM` path)
  and `--batch-parts 1`;
- PyTorch: a same-size `nn.LSTM` truncated-BPTT loop (embedding -> nn.LSTM(num_layers,
  batch_first) -> Linear; detached states carried between batches; Adam lr 2e-3;
  clip_grad_norm_ 5). Skipped with a message when torch is not installed. On a bf16 CPU also
  the same loop under `torch.autocast("cpu", dtype=torch.bfloat16)`;
- the matmul limit of this machine (bench/limits.py), on 2048^3 and on the shapes the LSTM uses:
  numpy's `a @ b` in a subprocess without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (which halve
  current OpenBLAS's rate, issue 28; this process keeps them, and numpy's rate with them is shown
  too), and TensorFlow's `tf.matmul` chained in a `tf.function`, in float32 and, where the CPU has
  bf16 instructions, bfloat16. `tf.matmul` runs in a second subprocess, on TensorFlow's default
  threads: this process has one thread per op (above), and a one-thread rate is no limit. The
  float32 limit at a shape is the larger of numpy's and tf.matmul's (bench/limits.py); the highest
  over the shapes is the denominator of the "% of limit" column (the bf16 limit's, of "% of bf16").

Every contender is warmed up, then timed `--repeats` times over `--steps` consecutive training
steps; the repeats of the contenders are interleaved so that a noisy machine hurts them alike. The
table shows the best repeat (and the median in brackets).
"""

import argparse
import atexit
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as textgen sets it (textgen/_quiet_import.py)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from host import describe_host  # noqa: E402  (bench/host.py, beside this script)
from limits import Limits  # noqa: E402  (bench/limits.py)

tf.get_logger().setLevel("ERROR")  # one tf.function per matmul shape is intended

from textgen import config as config_lib  # noqa: E402
from textgen.corpus.reading import read_text  # noqa: E402
from textgen.corpus.stream_batches import StreamBatches  # noqa: E402
from textgen.corpus.vocabulary import Vocabulary  # noqa: E402
from textgen.network import native_ops
from textgen.network.precision import native_bfloat16
from textgen.training.text_trainer import TextTrainer  # noqa: E402

FLOP_FORMULA = (
    "FLOPs per character = 3 x forward matmul FLOPs (forward + backward, the backward being two "
    "matmuls per forward one)\n"
    "  forward = 2*E*4H (layer-1 input projection) + (L-1) * 2*H*4H (input projections of layers "
    "2..L)\n"
    "          + L * 2*H*4H (recurrent matmuls) + 2*H*V (output layer)\n"
    "  (element-wise gate math, embedding lookups, softmax and the optimizer are not counted)"
)


def flops_per_char(embedding, hidden, layers, vocab):
    forward = (
        2 * embedding * 4 * hidden
        + (layers - 1) * 2 * hidden * 4 * hidden
        + layers * 2 * hidden * 4 * hidden
        + 2 * hidden * vocab
    )
    return 3 * forward


def executed_flops_per_char(embedding, hidden, layers, vocab, tokens_per_part):
    """What our step really runs when layer 1's input projection is a table lookup
    (`fused_rnn.lstm_layer_on_table`): the three embedding-side matmuls (projection, kernel and
    input gradients, 2*E*4H each per character) give way to the table, embeddings @ kernel and
    its two gradient matmuls, once per batch part (2*V*E*4H each)."""
    table = 3 * 2 * vocab * embedding * 4 * hidden / tokens_per_part
    return flops_per_char(embedding, hidden, layers, vocab) - 3 * 2 * embedding * 4 * hidden + table


# -------------------------------------------------------------- contenders --
class KerasContender:
    """The project's own training step: a `TextTrainer` prepared on the corpus (in a temporary run
    directory), timed through `trainer.train_step` exactly as `TextTrainer.train` calls it, with the
    states each step returns fed to the next one."""

    def __init__(
        self, name, fused, args, workdir, batch_parts=0, native=True, log=None, precision="auto"
    ):
        # dropout 0, as the PyTorch reference: the benchmark compares the recurrent layers, and
        # Keras' dropout masks (one Philox draw per activation) cost about 4% of our step.
        config = config_lib.TrainConfig(
            cell=getattr(args, "cell", "lstm"),
            batch_parts=batch_parts,
            dropout=0.0,
            data=args.data,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            embedding_size=args.embedding_size,
            batch_size=args.batch_size,
            seq_length=args.seq_length,
            fused=fused,
            precision=precision,
            optimizer="adam",
            learning_rate=2e-3,
            grad_clip=5.0,
            sample_every=0,
            out=os.path.join(workdir, f"fused-{fused}-{precision}"),
        )
        trainer = TextTrainer(config, log=log or (lambda message: None), progress_bar=False)
        trainer.prepare()
        if trainer.config.batch_parts > 1:
            name += f", {trainer.config.batch_parts} batch parts"
        self.name, self.trainer, self.batches = name, trainer, trainer.train_batches
        self.parts = trainer.config.batch_parts
        self.native = native  # False: traced with textgen's C++ ops switched off
        self.states = trainer.states
        self.position = 0
        self.losses = []

    def _place(self, array):
        placement = getattr(self.trainer, "placement", None)
        return placement.distribute(array) if placement is not None else array

    def run(self, steps):
        with contextlib.nullcontext() if self.native else native_ops.disabled():
            for _ in range(steps):
                inputs, targets = self.batches[self.position % len(self.batches)]
                self.position += 1
                total, count, self.states = self.trainer.train_step(
                    self._place(inputs), self._place(targets), self.states
                )
        self.losses.append(float(total / count))  # waits for the last step


class TorchContender:
    def __init__(self, name, args, vocabulary, batches, autocast=False):
        import torch
        from torch import nn

        torch.manual_seed(0)
        self.torch, self.name, self.batches = torch, name, batches
        # torch.autocast("cpu", bfloat16): the matmuls (and nn.LSTM) in bf16, master weights
        # and the optimizer float32, as ours under --precision bfloat16.
        self.autocast = autocast

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(len(vocabulary), args.embedding_size)
                self.lstm = nn.LSTM(
                    args.embedding_size,
                    args.hidden_size,
                    num_layers=args.num_layers,
                    batch_first=True,
                )
                self.output = nn.Linear(args.hidden_size, len(vocabulary))

            def forward(self, ids, state):
                x, state = self.lstm(self.embedding(ids), state)
                return self.output(x), state

        self.model = Model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=2e-3)
        self.loss_fn = nn.CrossEntropyLoss()
        shape = (args.num_layers, args.batch_size, args.hidden_size)
        self.state = (torch.zeros(shape), torch.zeros(shape))
        self.position = 0
        self.losses = []

    def run(self, steps):
        torch = self.torch
        for _ in range(steps):
            inputs, targets = self.batches[self.position % len(self.batches)]
            self.position += 1
            inputs = torch.from_numpy(inputs.astype(np.int64))
            targets = torch.from_numpy(targets.astype(np.int64))
            state = tuple(s.detach() for s in self.state)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                logits, self.state = self.model(inputs, state)
                loss = self.loss_fn(
                    logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
                )
            self.state = tuple(s.float() for s in self.state)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.optimizer.step()
        self.losses.append(float(loss.detach()))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per contender")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per contender first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-length", type=int, default=100)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--embedding-size", type=int, default=64)
    parser.add_argument("--data", default=config_lib.DEFAULT_DATA)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--no-keras", action="store_true", help="skip the stock Keras layers")
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="skip the bfloat16 contenders (ours forced to bf16, PyTorch under autocast)",
    )
    parser.add_argument(
        "--no-tf-ops",
        action="store_true",
        help="skip our step traced without textgen's C++ LSTM ops",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    text = read_text(args.data)
    vocabulary = Vocabulary.from_characters(text)
    ids = np.asarray(vocabulary.encode(list(text)), dtype=np.int32)
    batches = StreamBatches(ids, args.batch_size, args.seq_length)
    chars_per_step = args.batch_size * args.seq_length
    E, H, L, V = args.embedding_size, args.hidden_size, args.num_layers, len(vocabulary)
    per_char = flops_per_char(E, H, L, V)

    print(describe_host())
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, numpy {np.__version__}; "
        f"{os.cpu_count()} CPUs; "
        f"TF threads intra {tf.config.threading.get_intra_op_parallelism_threads()} "
        f"inter {tf.config.threading.get_inter_op_parallelism_threads()} (0 = default)"
    )
    print(
        f"model: embedding {E} -> {L} x LSTM {H} -> dense {V}; batch {args.batch_size} x "
        f"seq {args.seq_length} = {chars_per_step} chars/step; Adam lr 2e-3, global-norm clip 5"
    )
    print(FLOP_FORMULA)
    print(
        f"  = 3 x (2*{E}*{4 * H} + {L - 1}*2*{H}*{4 * H} + {L}*2*{H}*{4 * H} + 2*{H}*{V}) "
        f"= {per_char / 1e6:.3f} MFLOP/char\n"
    )

    workdir = tempfile.mkdtemp(prefix="textgen-bench-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    # The default path: --fused auto measures the kernels on this machine (or reads the
    # choice it cached) and trains on the fastest; its line is printed as a run prints it.
    os.environ.pop("TEXTGEN_KERNEL", None)
    log = []
    default = KerasContender(
        "ours, default", "auto", args, os.path.join(workdir, "auto"), log=log.append
    )
    kernel = getattr(default.trainer, "kernel", None)
    print("\n".join(line for line in log if line.startswith("recurrent kernel:")))
    default.name += f" (auto: {kernel.candidate.name})" if kernel else " (auto)"
    contenders = [default, KerasContender("ours, C++ ops (fused on)", "on", args, workdir)]
    if native_ops.lstm_ops() is not None and not args.no_tf_ops:
        contenders.append(
            KerasContender(
                "ours on TF ops", "on", args, os.path.join(workdir, "tf-ops"), native=False
            )
        )
    if native_bfloat16() and not args.no_bf16:
        # The bfloat16 kernels forced, whatever auto chose (--precision bfloat16 --fused on).
        contenders.append(
            KerasContender(
                "ours, C++ ops bf16",
                "on",
                args,
                os.path.join(workdir, "bf16"),
                precision="bfloat16",
            )
        )
        contenders.append(
            KerasContender(
                "ours, TF ops bf16",
                "on",
                args,
                os.path.join(workdir, "tf-bf16"),
                native=False,
                precision="bfloat16",
            )
        )
    if not args.no_keras:
        contenders.append(
            KerasContender("stock Keras (fused off)", "off", args, workdir, batch_parts=1)
        )
    torch_note = None
    if args.no_torch:
        torch_note = "PyTorch skipped (--no-torch)"
    else:
        try:
            import torch
        except ImportError:
            torch_note = (
                "PyTorch skipped: torch is not installed (pip install -e .[bench] installs it)"
            )
        else:
            contenders.append(
                TorchContender(f"PyTorch {torch.__version__} nn.LSTM", args, vocabulary, batches)
            )
            if native_bfloat16() and not args.no_bf16:
                contenders.append(
                    TorchContender(
                        "PyTorch nn.LSTM, autocast bf16", args, vocabulary, batches, autocast=True
                    )
                )
            print(f"PyTorch threads {torch.get_num_threads()}")
    if torch_note:
        print(torch_note)

    shapes = [
        ("square", 2048, 2048, 2048),
        ("recurrent step h@R", args.batch_size, H, 4 * H),
        ("recurrent grad dz@R^T", args.batch_size, 4 * H, H),
        ("input projection", args.batch_size * args.seq_length, H, 4 * H),
        ("weight gradient", H, args.batch_size * args.seq_length, 4 * H),
    ]
    limits = Limits(shapes, tf_here=False)
    for contender in contenders:
        contender.run(args.warmup)
    times = {c.name: [] for c in contenders}
    for _ in range(args.repeats):
        for contender in contenders:
            start = time.perf_counter()
            contender.run(args.steps)
            times[contender.name].append(time.perf_counter() - start)
        limits.measure(seconds=0.25)

    print("\n".join(limits.describe()))
    limits.close()
    print(f"matmul rates, best call of {args.repeats} x 0.25 s per column and shape (GFLOP/s):")
    print("\n".join(limits.table()))
    best, best_shape = limits.best_limit()
    bf16, bf16_shape = limits.best_bf16_limit()
    print(
        f"  {limits.legend()}\n  denominator of '% of limit': the highest float32 limit, "
        f"{best / 1e9:.1f} GFLOP/s ({limits.labels[best_shape]})"
        + (
            f"; of '% of bf16': the highest bf16 limit, {bf16 / 1e9:.1f} GFLOP/s "
            f"({limits.labels[bf16_shape]})"
            if bf16
            else "; no bf16 instructions on this CPU"
        )
        + "\n"
    )

    print(f"training, {args.steps} steps x {args.repeats} repeats, best (median):")
    print(
        f"  {'':<48}{'chars/s':>18}{'ms/step':>10}{'GFLOP/s':>10}{'% of limit':>12}"
        + (f"{'% of bf16':>11}" if bf16 else "")
        + f"{'loss':>8}"
    )
    speed = {}
    for contender in contenders:
        seconds = times[contender.name]
        best_rate = args.steps * chars_per_step / min(seconds)
        median_rate = args.steps * chars_per_step / statistics.median(seconds)
        speed[contender.name] = best_rate
        print(
            f"  {contender.name:<48}{f'{best_rate:,.0f} ({median_rate:,.0f})':>18}"
            f"{min(seconds) / args.steps * 1e3:>10.1f}{best_rate * per_char / 1e9:>10.1f}"
            f"{100 * best_rate * per_char / best:>11.1f}%"
            + (f"{100 * best_rate * per_char / bf16:>10.1f}%" if bf16 else "")
            + f"{contender.losses[-1]:>8.3f}"
        )
    ours = speed[contenders[0].name]
    print()
    for contender in contenders[1:]:
        print(f"ours, default / {contender.name}: {ours / speed[contender.name]:.2f}x")
    print(
        f"ours, default achieved / the float32 limit: {100 * ours * per_char / best:.1f}%"
        + (f" (of the bf16 limit: {100 * ours * per_char / bf16:.1f}%)" if bf16 else "")
    )
    # The rate the step's own matmuls could reach: the recurrent matmuls (forward h @ R and
    # the two backward ones, one batch part's rows each) at the "recurrent step" row's limit,
    # every other counted matmul (input projections, output layer, their gradients, all over
    # the batch's B x T rows) at the "input projection" row's limit.
    recurrent_flops = 3 * L * 2 * H * 4 * H
    shapes_rate = {label: limits.limit((m, k, n)) for label, m, k, n in shapes}
    ideal_seconds_per_char = (
        recurrent_flops / shapes_rate["recurrent step h@R"]
        + (per_char - recurrent_flops) / shapes_rate["input projection"]
    )
    print(
        "ours, default / the float32 limit at the step's own shapes: "
        f"{100 * ours * ideal_seconds_per_char:.1f}% "
        f"(recurrent matmuls, {recurrent_flops / 1e6:.3f} MFLOP/char, at the recurrent-step limit "
        f"{shapes_rate['recurrent step h@R'] / 1e9:.1f} GFLOP/s; the other "
        f"{(per_char - recurrent_flops) / 1e6:.3f} at the input-projection limit "
        f"{shapes_rate['input projection'] / 1e9:.1f})"
    )
    if native_ops.lstm_ops() is None:
        print("ours ran without textgen's C++ LSTM ops (see the note above): on TensorFlow ops")
    else:
        executed = executed_flops_per_char(E, H, L, V, chars_per_step // contenders[0].parts)
        print(
            f"ours executes {executed / 1e6:.3f} MFLOP/char (layer 1's input projection is a "
            f"lookup in embeddings @ kernel on textgen's C++ ops): "
            f"{100 * ours * executed / best:.1f}% of the float32 limit on the FLOPs it runs"
        )
    if torch_note:
        print(torch_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
