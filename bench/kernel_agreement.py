"""Does `--fused auto` pick the kernel that is fastest in steady state? (issue 28, part 3)

    .venv/bin/python bench/kernel_agreement.py [--steps 20] [--repeats 4]

For each configuration (the default 2x256 LSTM at batch 16, 32 and 64; a GRU and a vanilla RNN
of the same size at batch 32), in one process:

1. auto: a training run prepared as `textgen.train` prepares it (`--fused auto`, the default
   `--precision auto`), on a fresh private kernel cache, so it measures (`kernel_choice`); its
   "recurrent kernel:" line is printed;
2. every candidate that measurement had, forced (`--fused on|off`, the C++ ops on or off,
   `--precision float32|bfloat16`), each its own prepared run;
3. all of them timed in steady state: `--repeats` interleaved repeats of `--steps` consecutive
   training steps each, after warm-up steps, best repeat kept (the states carried, as in
   training; `train_throughput.KerasContender`).

It prints auto's choice, the steady-state ranking, and auto's steady-state rate against the
fastest forced kernel's: the target is auto within 5% of it at every configuration.
"""

import argparse
import os
import sys
import tempfile
import time
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from host import describe_host  # noqa: E402
from train_throughput import KerasContender  # noqa: E402  (bench/train_throughput.py)

from textgen import config as config_lib  # noqa: E402
from textgen.network import kernel_choice, native_ops  # noqa: E402
from textgen.network.precision import training_precision  # noqa: E402

CONFIGURATIONS = [("lstm", 16), ("lstm", 32), ("lstm", 64), ("gru", 32), ("rnn", 32)]
TARGET = 0.95  # auto's steady-state rate / the fastest forced kernel's


def contender_args(cell, batch, data):
    return SimpleNamespace(
        cell=cell,
        data=data,
        hidden_size=256,
        num_layers=2,
        embedding_size=64,
        batch_size=batch,
        seq_length=100,
    )


def forced(candidate, args, workdir):
    """A prepared run on `candidate`, unmeasured."""
    return KerasContender(
        f"{candidate.name} (forced)",
        "on" if candidate.fused else "off",
        args,
        os.path.join(workdir, candidate.name.replace(" ", "-").replace("+", "p")),
        native=candidate.native,
        precision=candidate.precision,
    )


def measure_configuration(cell, batch, args, workdir):
    options = contender_args(cell, batch, args.data)
    os.environ["TEXTGEN_KERNEL_CACHE"] = os.path.join(workdir, "kernel-choice.json")
    os.environ.pop("TEXTGEN_KERNEL", None)
    log = []
    auto = KerasContender("auto", "auto", options, os.path.join(workdir, "auto"), log=log.append)
    choice = auto.trainer.kernel
    print(next((line for line in log if line.startswith("recurrent kernel:")), "(no kernel line)"))
    candidates = kernel_choice.candidates(
        cell, native_ops.lstm_ops() is not None, training_precision("auto")
    )
    contenders = [auto] + [forced(c, options, workdir) for c in candidates]
    names = ["auto"] + [c.name for c in candidates]
    for contender in contenders:
        contender.run(args.warmup)
    best = [float("inf")] * len(contenders)
    for _ in range(args.repeats):
        for index, contender in enumerate(contenders):
            start = time.perf_counter()
            contender.run(args.steps)
            best[index] = min(best[index], time.perf_counter() - start)
    rates = dict(zip(names, (args.steps * batch * 100 / seconds for seconds in best)))
    forced_rates = {name: rate for name, rate in rates.items() if name != "auto"}
    fastest = max(forced_rates, key=forced_rates.get)
    ratio = rates["auto"] / forced_rates[fastest]
    ranking = ", ".join(
        f"{name} {rate:,.0f}"
        for name, rate in sorted(forced_rates.items(), key=lambda item: -item[1])
    )
    return {
        "configuration": f"{cell} batch {batch}",
        "auto": choice.candidate.name if choice else "?",
        "auto_rate": rates["auto"],
        "fastest": fastest,
        "ratio": ratio,
        "ranking": ranking,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=4, help="timed repeats per kernel")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per kernel first")
    parser.add_argument("--data", default=config_lib.DEFAULT_DATA)
    parser.add_argument(
        "--only", nargs="*", default=None, help="configurations as cell:batch, e.g. lstm:32 gru:32"
    )
    args = parser.parse_args(argv)
    configurations = CONFIGURATIONS
    if args.only:
        configurations = [(item.split(":")[0], int(item.split(":")[1])) for item in args.only]
    print(describe_host(), flush=True)
    rows = []
    for cell, batch in configurations:
        with tempfile.TemporaryDirectory(prefix="textgen-agreement-") as workdir:
            print(f"\n{cell} batch {batch}:", flush=True)
            row = measure_configuration(cell, batch, args, workdir)
            print(
                f"  steady state (chars/s, best of {args.repeats} x {args.steps} steps): "
                f"auto {row['auto_rate']:,.0f}; {row['ranking']}",
                flush=True,
            )
            rows.append(row)
    print(
        f"\n{'configuration':<16}{'auto chose':<16}{'fastest forced':<16}"
        f"{'auto / fastest':>15}  target >= {TARGET:.0%}"
    )
    for row in rows:
        verdict = "met" if row["ratio"] >= TARGET else "NOT met"
        print(
            f"{row['configuration']:<16}{row['auto']:<16}{row['fastest']:<16}"
            f"{row['ratio']:>14.1%}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
