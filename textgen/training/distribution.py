"""tf.distribute for stateful TBPTT: which strategy, and how the streams map onto replicas.

Stock stateful Keras layers fail under MirroredStrategy ("Expected batch size 8, received 4"),
so the states are carried explicitly: replica r owns streams [r*b, (r+1)*b) of the global batch
(b = batch_size / replicas) for the whole run, gets exactly those rows of every batch, and its
final states come back as per-replica values that are fed to it again at the next batch. Streams
never move between replicas, so each keeps its trajectory exactly as on one device.
"""

import json
import os

import numpy as np
import tensorflow as tf

from textgen.errors import UsageError

STRATEGIES = ("auto", "none", "mirrored", "multiworker")


def make_strategy(name):
    """auto: MirroredStrategy over every visible GPU if there is more than one, else none.

    A process makes one strategy of each kind and reuses it for every later run (a notebook, a
    test session, a benchmark training run after run). A second MirroredStrategy over the same
    devices starts its collectives' instance keys where the first one's began, and TensorFlow
    remembers the shapes of the first strategy's collectives under those keys: the new run's
    first all-reduce of another shape then aborts with "Shape mismatch in the collective
    instance 100" (tensorflow/tensorflow#62790).
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            devices = [d.name for d in gpus]
            return _shared(("mirrored", *devices), lambda: tf.distribute.MirroredStrategy(devices))
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return _shared(("mirrored", *devices), lambda: tf.distribute.MirroredStrategy(devices))
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError(
                "`strategy` multiworker needs the TF_CONFIG environment variable "
                "(cluster and task); see docs/distributed.md"
            )
        return _shared(
            ("multiworker", os.environ["TF_CONFIG"]), tf.distribute.MultiWorkerMirroredStrategy
        )
    raise UsageError(f"`strategy` must be one of {', '.join(STRATEGIES)}, got {name!r}")


_STRATEGIES = {}  # (kind, devices... or TF_CONFIG) -> the process's strategy of that kind


def _shared(key, make):
    if key not in _STRATEGIES:
        _STRATEGIES[key] = make()
    return _STRATEGIES[key]


def cpu_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def batch_parts(requested, batch_size, strategy="none"):
    """How many groups of streams a CPU training step runs in parallel (see `TextTrainer`).

    1 whenever a GPU is visible or `strategy` is mirrored or multiworker: the GPU or the replicas
    do the parallel work then (and every replica multi-GPU `auto` makes needs a GPU). Otherwise
    `requested` > 0 is taken as it is, and auto (0) is one group per core, each of at least 16
    streams (smaller groups make the per-step matmuls too thin to pay).
    """
    if strategy in ("mirrored", "multiworker") or tf.config.list_physical_devices("GPU"):
        return 1
    if requested > 0:
        return requested
    return max(1, min(cpu_cores(), batch_size // 16))


def use_one_thread_per_part(parts):
    """Gives each of `parts` parallel groups its share of the cores for TensorFlow's per-op
    threads (one each on this 2-core machine): a group's small per-step ops then run where they
    are, instead of every one being split over every core. Only possible before TensorFlow runs
    its first op; later (e.g. inside a test session) the groups still run in parallel, on
    TensorFlow's default threads."""
    if parts <= 1:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cpu_cores() // parts))
        tf.config.threading.set_inter_op_parallelism_threads(max(2, parts))
    except RuntimeError:  # TensorFlow is already running
        pass


def is_chief():
    """Only the chief writes checkpoints: task chief, or worker 0 when there is no chief."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return (
        task.get("type") == "worker"
        and task.get("index", 0) == 0
        and "chief" not in config.get("cluster", {})
    )


class StreamPlacement:
    """Splits a global batch's rows (streams, or images) over the replicas, always the same way:
    replica r gets a fixed contiguous share."""

    def __init__(self, strategy, batch_size, what=None):
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        if batch_size % self.replicas:
            raise UsageError(
                f"{what or f'`batch_size` {batch_size}'} does not divide over "
                f"{self.replicas} replicas; pass a multiple of {self.replicas}"
            )

    def distribute(self, array):
        """Replica r gets rows [r*n/R, (r+1)*n/R) of a [n, ...] array: equal shares of a full
        batch, shares as even as they can be of a short one."""
        if self.replicas == 1:
            return tf.convert_to_tensor(array)
        array = np.asarray(array)
        rows = array.shape[0]
        bounds = [rows * r // self.replicas for r in range(self.replicas + 1)]
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.convert_to_tensor(
                array[
                    bounds[context.replica_id_in_sync_group] : bounds[
                        context.replica_id_in_sync_group + 1
                    ]
                ]
            )
        )

    def gather(self, value):
        """The [batch, ...] array of a per-replica value, rows in stream order (a collective
        under MultiWorkerMirroredStrategy: every worker must call it)."""
        if self.replicas == 1:
            return np.asarray(value)
        local = self.strategy.experimental_local_results(value)
        if len(local) == self.replicas:  # every replica is on this host
            return np.concatenate([np.asarray(v) for v in local], axis=0)
        return self.strategy.gather(value, axis=0).numpy()


def stop_agreement(strategy):
    """`agree(flag) -> bool`: whether any worker wants to stop after this step. Every worker
    must stop after the same step, since each later step and the checkpoint are collectives; so
    under MultiWorkerMirroredStrategy one worker's SIGTERM is summed over all of them (a tiny
    all-reduce per step). In one process the flag is already everyone's."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool

    @tf.function
    def summed(flag):
        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(flag)), axis=None
        )

    return lambda flag: float(summed(tf.constant(float(flag)))) > 0
