"""Throughput of MirroredStrategy training against one device, side by side in one run.

    .venv/bin/python bench/distributed_scaling.py [--devices 2] [--steps 20]

On a CPU-only machine the replicas are logical CPU devices that share the same cores, so this
measures the overhead of the distributed step (per-replica states, all-reduce), not a speed-up.
Real scaling figures need real GPUs: run it there with --devices set to the GPU count.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tensorflow as tf  # noqa: E402

import textgen  # noqa: E402,F401  (quiet TensorFlow import)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2, help="logical CPU devices (CPU only)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-length", type=int, default=100)
    parser.add_argument("--hidden-size", type=int, default=256)
    args = parser.parse_args()
    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices
        )

    from textgen.config import TrainConfig
    from textgen.training.text_trainer import TextTrainer

    rates = {}
    for strategy in ("none", "mirrored"):
        out = os.path.join(tempfile.mkdtemp(), "run")
        config = TrainConfig(
            out=out,
            strategy=strategy,
            batch_size=args.batch_size,
            seq_length=args.seq_length,
            hidden_size=args.hidden_size,
            sample_every=0,
        )
        trainer = TextTrainer(config, log=lambda m: None, progress_bar=False)
        trainer.prepare()
        batches, place = trainer.train_batches, trainer.placement
        states = trainer.states
        for k in range(3):  # warm-up and tracing
            inputs, targets = batches[k]
            _, _, states = trainer.train_step(
                place.distribute(inputs), place.distribute(targets), states
            )
        started = time.perf_counter()
        for k in range(3, 3 + args.steps):
            inputs, targets = batches[k % len(batches)]
            total, count, states = trainer.train_step(
                place.distribute(inputs), place.distribute(targets), states
            )
        float(total / count)
        elapsed = time.perf_counter() - started
        rates[strategy] = args.steps * batches.tokens_per_batch / elapsed
        print(
            f"{strategy:>9}: {trainer.strategy.num_replicas_in_sync} replica(s), "
            f"{rates[strategy]:,.0f} chars/s"
        )
    print(f"mirrored / one device: {rates['mirrored'] / rates['none']:.2f}x")


if __name__ == "__main__":
    main()
