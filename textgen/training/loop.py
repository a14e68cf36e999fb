"""TrainingLoop: the one training loop of textgen's language models and of the captioner.

It owns what every run does alike: the run directory (resume, the lock, config and vocabulary,
checkpoints), the epoch and step loop, its stop conditions (--epochs, --max-steps, --max-minutes,
SIGINT/SIGTERM), the divergence abort, the learning-rate schedule, the logs (RUN/metrics.jsonl,
`textgen.training.metrics_log`, and TensorBoard's RUN/logs, `textgen.training.tensorboard_log`),
the log lines
and the result. A model's trainer subclasses it and supplies hooks: its data and model
(`prepare_run`), its epochs' batches (`batches`), its train step (`training_step`, returning the
summed loss and the token count), its evaluation, its checkpoint groups and what it does when
training ends (`finish`). `global_mean` and `apply_gradients` are the one gradient step of
both, on one device or under a tf.distribute strategy.

It is a custom loop and not `keras.Model.fit`: stateful truncated BPTT needs per-stream state
pinned to replicas and saved in the checkpoint, clipping after the cross-replica sum, and a resume
from any step that continues bit for bit, which `fit` with `BackupAndRestore` does not give.
"""

import contextlib
import dataclasses
import functools
import math
import os
import sys
import time

import keras
import tensorflow as tf
from tqdm import tqdm

from textgen.errors import TrainingDiverged, UsageError
from textgen.io import export_disk_full, is_disk_full
from textgen.network import kernel_choice, native_ops
from textgen.network.precision import native_bfloat16, training_precision
from textgen.training.distribution import is_chief, stop_agreement
from textgen.training.metrics_log import MetricsLog
from textgen.training.progress import Progress
from textgen.training.run_directory import (
    RunDirectory,
    assign_variables,
    read_checkpoint,
    releases_lock,
)
from textgen.training.stop_request import StopRequest
from textgen.training.tensorboard_log import TensorBoardLog


@dataclasses.dataclass
class TrainResult:
    run_directory: str
    global_step: int
    epoch: int
    step_losses: list  # training loss of every step (nats/token) since the run began
    history: list  # one eval row of RUN/metrics.jsonl per finished epoch (train and validation)
    final_val_loss: float  # nats/token on the validation data with the final weights
    stopped_by: str  # "epochs", "max_steps", "max_minutes" or "done" (nothing to train)
    seconds: float  # wall time of the call
    states: list | None = None  # textgen: every stream's recurrent state after the last step
    scores: dict | None = None  # captioning: greedy-caption scores of validation images


# The throughput scalar's name per progress-bar unit.
UNIT_NAMES = {"char": "characters", "tok": "tokens", "img": "images"}


def closes_logs(method):
    """Decorates `train()`: the metrics log and the TensorBoard writer are closed however
    training ends."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self.close_logs()

    return wrapper


def learning_rate(config, epoch, fraction):
    """The rate of a step in `epoch` (from 0) at `fraction` (0 to 1) of the run: --lr-schedule
    cosine falls from --learning-rate to --min-learning-rate along a half cosine over the run,
    constant keeps it; either is multiplied by --lr-decay once for every epoch after the first
    --lr-decay-after ones (char-rnn's schedule)."""
    rate = config.learning_rate
    if config.lr_schedule == "cosine":
        low = config.min_learning_rate
        rate = low + (rate - low) * 0.5 * (1 + math.cos(math.pi * fraction))
    return rate * config.lr_decay ** max(0, epoch + 1 - config.lr_decay_after)


def make_optimizer(name, rate):
    """A Keras optimizer without clipping: `apply_gradients` clips after the
    cross-replica sum, so that clipping means the same on one device and on many."""
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rate, rho=0.95)
    if name == "adagrad":
        # min-char-rnn's optimizer: accumulators start at 0 and epsilon is 1e-8.
        return keras.optimizers.Adagrad(rate, initial_accumulator_value=0.0, epsilon=1e-8)
    if name == "sgd":
        return keras.optimizers.SGD(rate)
    return keras.optimizers.Adam(rate)


def global_mean(total, count, replicas):
    """A replica's summed loss over the token count of the whole batch, summed over the
    replicas: the replicas' losses (and gradients) add up to the one-device mean. Computed
    inside the gradient tape."""
    if replicas > 1:
        count = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, count)
    return total / tf.maximum(count, 1.0)


def apply_gradients(tape, loss, groups, clip, replicas):
    """The gradient step of one replica. `groups` are (optimizer, variables) pairs. The
    gradients are summed over the replicas, each group is clipped by its global norm (as Keras'
    global_clipnorm would clip one optimizer's gradients on one device), and each optimizer is
    handed each replica's equal share, since it sums over the replicas again."""
    variables = [v for _, group_variables in groups for v in group_variables]
    gradients = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    if replicas > 1:
        gradients = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, gradients
        )
    start = 0
    for optimizer, group_variables in groups:
        group = gradients[start : start + len(group_variables)]
        start += len(group_variables)
        if clip > 0:
            group, _ = tf.clip_by_global_norm(group, clip)
        if replicas > 1:
            group = [g / replicas for g in group]
        optimizer.apply_gradients(zip(group, group_variables))


class TrainingLoop:
    """The shared part of a trainer. Subclasses set `config_module` (a module with `from_dict`,
    `to_dict`, `validate` and `RUN_IDENTITY`), `unit` (the progress bar's unit),
    `progress_type` (a `Progress` dataclass with the trainer's own fields) and
    `export_command` (the CLI that exports a run, for the disk-full message), and implement
    the hooks below `# ---- hooks ----`.

    A config provides `out`, `resume`, `resume_from`, `epochs`, `max_steps`, `max_minutes`,
    `checkpoint_every`, `learning_rate`, `min_learning_rate`, `lr_schedule`, `lr_decay`,
    `lr_decay_after`, `fused`, `strategy`, `cell`, `num_layers`, `hidden_size`,
    `embedding_size`, `batch_size` and `dropout` (textgen.config.loop_field lists the shared
    ones)."""

    config_module = None
    unit = "tok"
    progress_type = Progress
    export_command = None
    # Keep the best evaluation's weights in checkpoint.best.npz, and mark its metrics-log row.
    keeps_best = False

    @classmethod
    def train_run(cls, config, explicit=(), log=None, progress_bar=None):
        """Trains (or resumes) the run `config.out`: the one entry point of every trainer.
        `explicit` names the parameters the caller set (on --resume they must match the run,
        or override what may change). Raises UsageError for bad input, before writing;
        TrainingInterrupted after SIGINT/SIGTERM, with the checkpoint written."""
        trainer = cls(config, explicit, log, progress_bar)
        trainer.prepare()
        return trainer.train()

    def __init__(self, config, explicit=(), log=None, progress_bar=None):
        self.config = config
        self.explicit = set(explicit)
        self.log = (
            log if log is not None else (lambda message: tqdm.write(message, file=sys.stdout))
        )
        self.progress_bar = progress_bar
        self.started = time.monotonic()
        self.run = None
        self.chief = True
        self.progress = self.progress_type()
        # The loss history of a checkpoint written before RUN/metrics.jsonl existed.
        self.legacy_history = {}
        self.metrics_log = None  # RUN/metrics.jsonl, opened by `prepare`
        self.tensorboard = None  # RUN/logs, opened by `prepare`
        self.kernel = None  # the kernel choice of `choose_kernels`, if it measured or read one
        self.eval_every = 0  # validation every this many steps as well (textgen's --eval-every)
        self.patience = 0  # stop after this many evaluations without a better one (0: never)

    # ---- set-up: every check on the input happens before anything is written ----
    def prepare(self):
        """Checks the input, reads the data, builds or restores the model and traces the steps.
        The run directory's lock, taken here, is released if this fails (and by `train`)."""
        try:
            self._prepare()
        except BaseException:
            if self.run is not None:
                self.run.unlock()
            raise

    def _prepare(self):
        self.started = time.monotonic()
        config, module = self.config, self.config_module
        run = RunDirectory(config.out)
        if config.resume:
            config = run.resumed_config(
                config, self.explicit, module.from_dict, module.RUN_IDENTITY
            )
        module.validate(config)
        self.chief = is_chief()
        if not config.resume and self.chief:
            run.require_new()
        self.config, self.run = config, run
        if config.resume and self.chief:
            run.lock()  # before anything is read: another process may be writing the checkpoint
        self.progress = self.progress_type()
        self.prepare_run()
        if config.resume:
            groups, progress = run.load_checkpoint(config.resume_from)
            self.progress, self.legacy_history = self.progress_type.from_checkpoint(progress)
            self.restore(groups)
            self.restore_best()
        elif self.chief:
            run.claim_new()
            run.save_config({**module.to_dict(config), **self.run_record()})
            run.save_vocabulary(self.vocabulary)
            self.save_run_files(run)
        self.prepare_steps()
        self.open_logs()
        self.choose_kernels()

    def save_run_files(self, run):
        """Hook: files a new run keeps beside config.json and vocab.json."""

    def choose_kernels(self):
        """With --fused auto on a CPU and one replica, times a few steps of each recurrent kernel
        on this run's model and first batch and keeps the fastest
        (`textgen.network.kernel_choice`: the answer is cached per machine and shape). Under
        several replicas or workers every one must trace the same kernel, so they keep the lean
        kernels unmeasured."""
        c = self.config
        stacks = self.recurrent_stacks()
        precision = training_precision(c.precision)
        if (
            c.fused != "auto"
            or not stacks
            or tf.config.list_logical_devices("GPU")
            or self.strategy.num_replicas_in_sync > 1
            or c.strategy == "multiworker"
        ):
            self.apply_precision(stacks, precision)
            return
        options = kernel_choice.candidates(c.cell, native_ops.lstm_ops() is not None, precision)
        key = kernel_choice.cache_key(kind=type(self).__name__, **self.kernel_shape())

        def trace(option):
            kernel_choice.apply(stacks, option)
            self.compile_steps()
            return self.train_step

        def run_step(train_step, batch):
            self.train_step = train_step
            return self.training_step(batch)[1]

        def measure(options):
            with self.measurement_undone():
                return kernel_choice.time_training(
                    trace, run_step, options, self.measurement_batch()
                )

        choice = kernel_choice.choose(options, measure, key, precision=precision)
        kernel_choice.apply(stacks, choice.candidate)
        self.kernel = choice
        self.log(choice.line(self.measurement_unit()))
        # A measured choice comes with its traced train step, which is kept; a cached or preset
        # one is traced on the first step, with the kernel just applied.
        self.compile_steps()
        if choice.train_step is not None:
            self.train_step = choice.train_step

    def evaluate_in_float32(self):
        """`evaluate` with the recurrent stacks' matmuls in float32, whatever precision trains
        (read when the evaluation step is traced, which happens inside this call): the
        validation loss is the float32 model's, comparable between precisions and the same
        that sample, score and export see, not bfloat16's rounding of it."""
        stacks = self.recurrent_stacks()
        saved = [stack.precision for stack in stacks]
        for stack in stacks:
            stack.precision = "float32"
        try:
            return self.evaluate()
        finally:
            for stack, precision in zip(stacks, saved):
                stack.precision = precision

    def apply_precision(self, stacks, precision):
        """--precision where no kernel is measured: bfloat16 matmuls on the lean kernels (auto
        stays float32 unmeasured). The stock layers (--fused off, or a GPU's cuDNN) have no
        bfloat16 path here, which the log says."""
        if precision != "bfloat16" or not stacks:
            return
        lean = [stack for stack in stacks if stack._use_fused()]
        for stack in lean:
            stack.precision = "bfloat16"
        if len(lean) < len(stacks):
            self.log(
                "precision: bfloat16 runs on the lean CPU kernels only; the stock layers this "
                "run uses compute in float32"
            )
        elif not native_bfloat16():
            self.log(
                "precision: bfloat16 on a CPU without bfloat16 instructions is emulated and "
                "slower than float32"
            )

    @contextlib.contextmanager
    def measurement_undone(self):
        """Puts back what the kernel measurement's training steps changed (the weights, the
        optimizers' slots and step counters, the dropout generators, the recurrent states),
        so that the run trains exactly as if nothing had been measured."""
        variables = self.measured_variables()
        saved = [variable.numpy() for variable in variables]
        saved_states = self.measured_states()
        try:
            yield
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)
            self.restore_measured_states(saved_states)

    def recurrent_stacks(self):
        """The model's RecurrentStacks, whose kernel `choose_kernels` picks."""
        return [self.model.recurrent_stack]

    def measured_variables(self):
        """Every variable a training step changes, put back after the kernel measurement."""
        return list(self.model.variables) + list(self.optimizer.variables)

    def measured_states(self):
        """What else a training step changes, outside the variables (textgen: the streams'
        recurrent states); `restore_measured_states` puts it back."""
        return None

    def restore_measured_states(self, saved):
        pass

    def kernel_shape(self):
        """The sizes that decide which kernel is fastest: part of the kernel cache's key (a
        trainer adds its own, such as the sequence length)."""
        c = self.config
        return {
            "cell": c.cell,
            "num_layers": c.num_layers,
            "hidden_size": c.hidden_size,
            "embedding_size": c.embedding_size,
            "vocabulary": len(self.vocabulary),
            "batch_size": c.batch_size,
            "dropout": c.dropout > 0,
        }

    def measurement_batch(self):
        """One batch for `training_step`, to time the kernels on."""
        raise NotImplementedError

    def measurement_unit(self):
        """The unit of the count `training_step` returns, which the kernel rates are in."""
        return self.unit

    def checkpoint(self):
        """Every worker gathers the groups (under multiworker that is a collective); only the
        chief writes."""
        groups = self.checkpoint_groups()
        if self.chief:
            # The logs first, so that they always reach the checkpoint's step.
            self.metrics_log.flush()
            self.tensorboard.flush()
            self.run.save_checkpoint(groups, self.progress.to_checkpoint(), self.variable_roots())

    # ---- the logs: RUN/metrics.jsonl and TensorBoard's RUN/logs, written by the chief ----
    def open_logs(self):
        """On --resume both are cut back to the checkpoint's step: a killed run may have logged
        steps after it, which the resumed run trains again."""
        resume_step = self.progress.global_step if self.config.resume else None
        self.metrics_log = MetricsLog(self.run.path, self.chief).open(
            resume_step, self.legacy_history
        )
        self.tensorboard = TensorBoardLog(self.run.path, self.chief).open(resume_step)

    def close_logs(self):
        for log in (self.metrics_log, self.tensorboard):
            if log is not None:
                log.close()

    def record_step(self, loss, rate, units, seconds):
        """A training step's loss, learning rate and throughput (`units` in `seconds`)."""
        p = self.progress
        extra = self.step_metrics()
        self.metrics_log.step(p.global_step, p.epoch, loss, rate, **extra)
        throughput = f"train/{UNIT_NAMES.get(self.unit, self.unit)}_per_second"
        scalars = {"train/loss": loss, "train/learning_rate": rate}
        scalars.update({f"train/{name}": value for name, value in extra.items()})
        self.tensorboard.scalars(p.global_step, {**scalars, throughput: units / seconds})

    def record_evaluation(self, reason, val, epoch=None, **fields):
        """An evaluation of the weights at the current step, `reason` "epoch" (an epoch's end:
        the history), "final" (the final weights of a run stopped mid-epoch) or another name,
        into the metrics log and TensorBoard; then the `after_evaluation` hook."""
        p = self.progress
        extra = self.validation_metrics(val)
        best = p.note_evaluation(val, scheduled=reason != "final")
        if best and self.keeps_best:
            extra["best"] = True
        self.metrics_log.evaluation(
            reason,
            p.global_step,
            p.epoch if epoch is None else epoch,
            val,
            **fields,
            **extra,
            seconds=time.monotonic() - self.started,
        )
        if best and self.keeps_best:
            self.save_best()
        scalars = {
            "validation/nats_per_token": val,
            "validation/perplexity": math.exp(min(val, 700.0)),
            "validation/bits_per_char": extra.get("val_bits_per_char"),
        }
        if reason == "epoch":
            scalars["train/epoch_loss"] = fields.get("train")
        self.tensorboard.scalars(p.global_step, scalars)
        self.after_evaluation(reason)

    def save_best(self):
        """checkpoint.best.npz: this step's weights, the best evaluation so far. Every worker
        gathers (a collective), the chief writes."""
        groups = self.checkpoint_groups()
        if self.chief:
            self.run.save_best_checkpoint(
                groups, self.progress.to_checkpoint(), self.variable_roots()
            )

    def restore_best(self):
        """On --resume: the best so far is checkpoint.best.npz's, which may be newer than the
        latest checkpoint (the final evaluation of a run stopped mid-epoch comes after it)."""
        if not (self.keeps_best and self.run.has_best_checkpoint()):
            return
        _, values = read_checkpoint(
            self.run.best_checkpoint_path(),
            "delete it and resume again: the run keeps the best weights anew from its next "
            "evaluation",
        )
        best, _ = self.progress_type.from_checkpoint(values)
        p = self.progress
        if best.best_val is not None and (p.best_val is None or best.best_val < p.best_val):
            p.best_val, p.best_step = best.best_val, best.best_step

    def restore_variables(self, groups, name, variables, what):
        assign_variables(variables, groups.get(name, []), what, self.variable_roots())

    def variable_roots(self):
        """The model's name (numbered per process by Keras), which the optimizers' slot names
        embed: checkpoint keys drop its number (`variable_keys`)."""
        return [self.model.name]

    # ---- the schedule ----
    def run_fraction(self):
        """How much of the run is behind us, from 0 to 1: the largest of the fractions of
        --epochs, --max-steps and (this invocation's) --max-minutes used so far."""
        c, p = self.config, self.progress
        fractions = [p.global_step / (c.epochs * self.steps_per_epoch())]
        if c.max_steps:
            fractions.append(p.global_step / c.max_steps)
        if c.max_minutes:
            fractions.append((time.monotonic() - self.started) / (c.max_minutes * 60))
        return min(1.0, max(fractions))

    def learning_rate(self, epoch, fraction=0.0):
        return learning_rate(self.config, epoch, fraction)

    # ---- the loop ----
    def nothing_left(self):
        """The line to print when a resumed run has nothing left to train, or None."""
        c, p = self.config, self.progress
        if c.max_steps and p.global_step >= c.max_steps:
            return (
                f"{c.out} is already at global step {p.global_step} (--max-steps "
                f"{c.max_steps}): nothing to do; pass a larger --max-steps to train further"
            )
        if p.epoch >= c.epochs:
            return (
                f"{c.out} has already trained its {c.epochs} epochs: nothing to do; pass a "
                "larger --epochs to train further"
            )
        if self.patience_spent():
            return (
                f"{c.out} stopped early: {p.evaluations_since_best} evaluations without a "
                f"better validation loss (--patience {self.patience}); nothing to do; pass a "
                "larger --patience to train further"
            )
        return None

    @releases_lock
    @closes_logs
    def train(self):
        c, p = self.config, self.progress
        self.log(self.describe())
        done = self.nothing_left()
        if done:
            self.log(done)
            last = self.metrics_log.last_evaluation or {}
            final_val = last["val"] if last.get("step") == p.global_step else float("nan")
            return self.result("done", final_val, None)
        if p.global_step:
            self.log(
                f"resuming {c.out} at epoch {p.epoch + 1}, step {p.step_in_epoch} "
                f"(global step {p.global_step})"
            )
        with StopRequest(self.log) as stop_request:
            stopped_by, val = self.run_epochs(stop_request)
        if val is None:
            val = self.evaluate_in_float32()
            self.record_evaluation("final", val)
        final_val = val
        self.log(
            f"stopped by {stopped_by} at global step {p.global_step}: "
            f"{self.format_loss('val', final_val)}; checkpoint in {c.out}"
        )
        if stopped_by == "patience":
            self.log(
                f"  (early stop: {p.evaluations_since_best} evaluations without a better "
                f"validation loss than {self.format_loss('val', p.best_val)} at step "
                f"{p.best_step}, whose weights are in {self.run.BEST_CHECKPOINT})"
            )
        scores = self.finish() if self.chief else None
        return self.result(stopped_by, final_val, scores)

    def result(self, stopped_by, final_val, scores):
        p = self.progress
        return TrainResult(
            self.config.out,
            p.global_step,
            p.epoch,
            list(self.metrics_log.losses),
            list(self.metrics_log.history),
            final_val,
            stopped_by,
            time.monotonic() - self.started,
            self.final_states(),
            scores,
        )

    def progress_bar_for(self, epoch, first_step):
        """The epoch's tqdm bar, `first_step` steps in (a resumed epoch starts part-way)."""
        c = self.config
        return tqdm(
            total=self.epoch_size(),
            initial=self.units_done(first_step),
            unit=self.unit,
            unit_scale=True,
            desc=f"epoch {epoch + 1}/{c.epochs}",
            leave=False,
            disable=None if self.progress_bar is None else not self.progress_bar,
            dynamic_ncols=True,
        )

    def run_epochs(self, stop_request):
        """The epoch loop: (stopped_by, the validation loss of the final weights or None).

        Each epoch's end is evaluated and logged; a checkpoint is written every
        --checkpoint-every steps within an epoch, at every epoch's end but the last one, and
        once when the loop ends, so the last checkpoint is written once and the previous one
        (checkpoint.prev.npz) is a step before it."""
        c, p = self.config, self.progress
        agree = stop_agreement(self.strategy)
        stopped_by, val = None, None
        while p.epoch < c.epochs:
            self.start_epoch(p.epoch, p.step_in_epoch)
            steps = self.steps_per_epoch()
            if p.step_in_epoch == 0:
                p.start_epoch()
            stopped_by, val = self.run_epoch(steps, stop_request, agree)
            if p.step_in_epoch < steps:  # stopped within the epoch
                break
            val = self.evaluate_in_float32()
            self.end_epoch(val)
            stopped_by = stopped_by or self.patience_spent()
            if stopped_by or p.epoch >= c.epochs:
                break
            self.checkpoint()
        self.checkpoint()
        return stopped_by or "epochs", val

    def run_epoch(self, steps, stop_request, agree):
        """The current epoch's steps from where the progress stands, until its end or a stop:
        (stopped_by or None, the validation loss of an --eval-every evaluation after the last
        step or None). SIGINT/SIGTERM checkpoint and raise TrainingInterrupted."""
        c, p = self.config, self.progress
        with self.progress_bar_for(p.epoch, p.step_in_epoch) as bar:
            for batch, units in self.batches(p.epoch, p.step_in_epoch):
                loss = self.train_one_step(batch, units)
                bar.update(units)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                if agree(stop_request.requested):
                    self.checkpoint()  # every worker
                    raise stop_request.error(p.global_step)
                self.after_step()
                val = self.evaluate_when_due(steps)
                stopped_by = self.stop_reason()
                if stopped_by:
                    return stopped_by, val
                if p.step_in_epoch < steps and p.global_step % c.checkpoint_every == 0:
                    self.checkpoint()
        return None, None

    def evaluate_when_due(self, steps):
        """--eval-every: the validation loss when this step is due for an evaluation within the
        epoch (an epoch's last step is evaluated by the epoch's end instead), else None."""
        p = self.progress
        if self.eval_every and p.global_step % self.eval_every == 0 and p.step_in_epoch < steps:
            return self.evaluate_between_epochs()
        return None

    def train_one_step(self, batch, units):
        """Trains one batch at the schedule's rate and logs it; returns its loss (nats/token).
        TrainingDiverged when the loss is not finite or above three times a uniform guess's."""
        c, p = self.config, self.progress
        rate = self.learning_rate(p.epoch, self.run_fraction())
        self.optimizer.learning_rate.assign(rate)
        step_started = time.monotonic()
        total, count = self.training_step(batch)
        seconds = time.monotonic() - step_started
        loss = total / max(count, 1.0)
        if not math.isfinite(loss) or loss > 3 * math.log(len(self.vocabulary)):
            raise TrainingDiverged(
                f"the training loss became {loss} at step {p.global_step + 1}; "
                f"the last good checkpoint in {c.out} is intact. Lower "
                f"`learning_rate` (now {c.learning_rate}) or `grad_clip` and `resume`"
            )
        p.add_step(total, count)
        self.record_step(loss, rate, units, seconds)
        return loss

    def stop_reason(self):
        """ "max_steps" or "max_minutes" once that budget is spent, else None."""
        c, p = self.config, self.progress
        if c.max_steps and p.global_step >= c.max_steps:
            return "max_steps"
        if c.max_minutes and time.monotonic() - self.started >= c.max_minutes * 60:
            return "max_minutes"
        return self.patience_spent()

    def patience_spent(self):
        """ "patience" once --patience evaluations in a row did not beat the best one."""
        if self.patience and self.progress.evaluations_since_best >= self.patience:
            return "patience"
        return None

    def evaluate_between_epochs(self):
        """--eval-every: a validation pass within an epoch (char-rnn's eval_val_every); an epoch's
        last step is evaluated by the epoch's end instead."""
        val = self.evaluate_in_float32()
        self.record_evaluation("every", val)
        self.log(f"step {self.progress.global_step}  {self.format_loss('val', val)}")
        return val

    def end_epoch(self, val):
        """Logs the epoch that just ended (its training loss, `val`, the rate) and moves on."""
        c, p = self.config, self.progress
        train = p.epoch_loss()
        rate = float(self.optimizer.learning_rate.numpy())
        self.record_evaluation("epoch", val, p.epoch + 1, train=train, learning_rate=rate)
        self.log(
            f"epoch {p.epoch + 1}/{c.epochs}  {self.format_loss('train', train)}  |  "
            f"{self.format_loss('val', val)}  |  learning rate {rate:.2e}"
        )
        p.end_epoch()

    def export(self):
        """RUN_DIR/saved_model, loadable without this project (`export_saved_model`). A model
        that cannot be exported (a UsageError: jieba cannot tokenise in the graph) is logged and
        training still ends well; a full disk names the command that exports it later."""
        path = os.path.join(self.config.out, "saved_model")
        try:
            self.export_saved_model(path)
        except UsageError as error:
            self.log(f"no SavedModel exported: {error}")
            return
        except Exception as error:
            if is_disk_full(error):
                raise export_disk_full(
                    path,
                    self.model.variables,
                    f"python -m {self.export_command} {self.config.out} {path} --overwrite",
                ) from None
            raise
        self.log(f"exported a SavedModel to {path}")

    # ---- hooks ----
    def prepare_run(self):
        """Reads the data and builds the vocabulary (`self.vocabulary`; the run's own on
        --resume), the strategy, the model and `self.optimizer`. UsageError for bad input."""
        raise NotImplementedError

    def restore(self, groups):
        """Assigns a checkpoint's groups (after `self.progress` was set from it)."""
        raise NotImplementedError

    def run_record(self):
        """Keys that a new run's config.json holds beside the config's fields (textgen: where a
        fine-tuning run's weights came from); read back by nothing that loads the config."""
        return {}

    def compile_steps(self):
        """Traces the train and evaluation steps."""
        raise NotImplementedError

    def prepare_steps(self):
        """The last step of `prepare`, after any restore: what the steps need, then the steps."""
        self.compile_steps()

    def describe(self):
        """The first log line: the data, the vocabulary and the model."""
        raise NotImplementedError

    def steps_per_epoch(self):
        raise NotImplementedError

    def epoch_size(self):
        """The progress bar's total for one epoch, in `unit`s."""
        raise NotImplementedError

    def units_done(self, step_in_epoch):
        raise NotImplementedError

    def start_epoch(self, epoch, step_in_epoch):
        """Called before an epoch's first step, or before the first step after a resume."""

    def batches(self, epoch, first_step):
        """The epoch's batches from `first_step` on, as (batch, units) pairs."""
        raise NotImplementedError

    def training_step(self, batch):
        """Trains one batch: (summed loss, token count), as floats."""
        raise NotImplementedError

    def after_step(self):
        """Called after every step (periodic samples)."""

    def evaluate(self):
        """Validation loss in nats per token."""
        raise NotImplementedError

    def validation_metrics(self, val):
        """Extra fields of a validation loss's row in the metrics log."""
        return {}

    def step_metrics(self):
        """Extra fields of the step just trained, in its metrics-log row and in TensorBoard as
        train/<name> (captioning's self-critical rewards)."""
        return {}

    def after_evaluation(self, reason):
        """Called after each evaluation was logged (captioning: validation images and their
        captions in TensorBoard)."""

    def format_loss(self, name, nats):
        raise NotImplementedError

    def checkpoint_groups(self):
        """{group name: variables or arrays} of a checkpoint."""
        raise NotImplementedError

    def final_states(self):
        return None

    def finish(self):
        """On the chief, after the last checkpoint: export, score; returns the scores or None."""
        return None

    def export_saved_model(self, path):
        """Writes the model as a SavedModel at `path` (replacing one there)."""
        raise NotImplementedError
