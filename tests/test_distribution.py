"""Training under tf.distribute keeps the stateful TBPTT layout: each replica owns fixed streams.

These run in subprocesses: logical CPU devices must be configured before TensorFlow starts, and
multi-worker training needs one process per worker.
"""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import TINY_CONFIG_FLAGS, checkpoint_step, python_module, run_python

pytestmark = pytest.mark.integration

TWO_CPUS = """
import textgen, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def test_mirrored_streams_stay_on_their_replica():
    run_python(
        TWO_CPUS
        + """
import numpy as np
from textgen.corpus.stream_batches import StreamBatches
from textgen.training.distribution import StreamPlacement, make_strategy
strategy = make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
placement = StreamPlacement(strategy, 6)
batches = StreamBatches(np.arange(1000, dtype=np.int32), batch_size=6, seq_length=7)
previous = None
for k in range(len(batches)):
    inputs, _ = batches[k]
    per_replica = [np.asarray(v) for v in
                   strategy.experimental_local_results(placement.distribute(inputs))]
    for r, rows in enumerate(per_replica):
        # replica r owns streams 3r..3r+2
        np.testing.assert_array_equal(rows, inputs[3 * r:3 * (r + 1)])
        if previous is not None:  # and each of its rows continues its own row of batch k-1
            np.testing.assert_array_equal(rows[:, 0], previous[r][:, -1] + 1)
    previous = per_replica
np.testing.assert_array_equal(placement.gather(placement.distribute(inputs)), inputs)

# A process reuses its strategy for every later run. A second MirroredStrategy over the same
# devices would reuse the first one's collective keys, and its first all-reduce of another shape
# would abort with "Shape mismatch in the collective instance 100" (tensorflow#62790).
def all_reduce(strategy, size):
    run = tf.function(lambda: strategy.run(
        lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.ones([size]))))
    return strategy.experimental_local_results(run())[0].numpy()
assert (all_reduce(strategy, 3) == 2).all()
assert make_strategy("mirrored") is strategy
assert (all_reduce(make_strategy("mirrored"), 5) == 2).all()
"""
    )


def test_mirrored_training_matches_one_device():
    out = run_python(
        TWO_CPUS
        + """
import dataclasses, tempfile, numpy as np
from helpers import SMALL_TEXT
from textgen.config import TrainConfig
from textgen.training.text_trainer import TextTrainer
directory = tempfile.mkdtemp()
open(directory + "/c.txt", "w").write(SMALL_TEXT)
config = TrainConfig(data=directory + "/c.txt", hidden_size=32, embedding_size=16, batch_size=8,
                     seq_length=20, epochs=2, sample_every=0, checkpoint_every=10, export=False,
                     dropout=0.0,  # dropout masks are drawn per replica, so only exact without
                     out=directory + "/one", strategy="none")
quiet = dict(log=lambda m: None, progress_bar=False)
one = TextTrainer.train_run(config, **quiet)
mirrored = dataclasses.replace(config, out=directory + "/two", strategy="mirrored")
two = TextTrainer.train_run(mirrored, **quiet)
one_losses, two_losses = np.array(one.step_losses), np.array(two.step_losses)
assert len(one_losses) == len(two_losses) == 78
relative = np.max(np.abs(one_losses - two_losses) / one_losses)
assert relative < 1e-4, relative
for a, b in zip(one.states, two.states):  # every stream ends in the same state
    # (after 78 steps oneDNN's rounding, which differs with the batch per matmul, leaves ~1e-4;
    # a stream on the wrong replica would be off by tenths)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-4)
print("max relative loss difference", relative)
"""
    )
    assert "max relative loss difference" in out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(run, data, max_steps, resume=False):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        command = python_module(
            "textgen.train",
            *["--strategy", "multiworker", "--data", data, "--out", run, *TINY_CONFIG_FLAGS],
            *["--epochs", "50", "--checkpoint-every", "4", "--max-steps", max_steps],
            "--no-progress",
            *(["--resume"] if resume else []),
        )
        log = open(f"{run}-worker{index}.log", "a")
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    return processes


def stop(processes):
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_all(processes, timeout):
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait(timeout=max(1, deadline - time.monotonic()))
    return [p.returncode for p in processes]


def test_multiworker_training_kill_and_resume(small_corpus, tmp_path):
    run = str(tmp_path / "run")
    processes = start_workers(run, str(small_corpus), max_steps=12)
    try:
        assert wait_all(processes, timeout=180) == [0, 0], open(run + "-worker1.log").read()
    finally:
        stop(processes)
    assert checkpoint_step(run) == 12

    # Both resume, then worker 1 is killed part way; the run is restarted from the checkpoint.
    processes = start_workers(run, str(small_corpus), max_steps=100_000, resume=True)
    try:
        deadline = time.monotonic() + 180
        while checkpoint_step(run) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(processes[1].pid, signal.SIGKILL)
        time.sleep(2)
    finally:
        stop(processes)
    killed_at = checkpoint_step(run)
    assert killed_at >= 20

    processes = start_workers(run, str(small_corpus), max_steps=killed_at + 8, resume=True)
    try:
        assert wait_all(processes, timeout=180) == [0, 0], open(run + "-worker0.log").read()
    finally:
        stop(processes)
    chief_log = open(run + "-worker0.log").read()
    assert f"(global step {killed_at})" in chief_log
    assert checkpoint_step(run) == killed_at + 8


@pytest.mark.slow  # test_multiworker_training_kill_and_resume is the quick multiworker form
def test_multiworker_sigterm_to_one_worker_stops_both_at_the_same_step(small_corpus, tmp_path):
    """A scheduler preempts one worker: every worker stops after the same step (they agree
    through a collective), the chief writes that step's checkpoint, both exit 143, and the run
    resumes from it."""
    run = str(tmp_path / "run")
    processes = start_workers(run, str(small_corpus), max_steps=100_000)
    try:
        deadline = time.monotonic() + 180
        while checkpoint_step(run) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        processes[1].send_signal(signal.SIGTERM)
        assert wait_all(processes, timeout=120) == [143, 143], open(run + "-worker0.log").read()
    finally:
        stop(processes)
    stopped_at = checkpoint_step(run)
    line = f"interrupted at step {stopped_at}; checkpoint written; continue with --resume"
    for index in range(2):
        assert line in open(f"{run}-worker{index}.log").read().splitlines()

    processes = start_workers(run, str(small_corpus), max_steps=stopped_at + 4, resume=True)
    try:
        assert wait_all(processes, timeout=180) == [0, 0], open(run + "-worker0.log").read()
    finally:
        stop(processes)
    assert f"(global step {stopped_at})" in open(run + "-worker0.log").read()
    assert checkpoint_step(run) == stopped_at + 4
