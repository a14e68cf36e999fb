"""Stateful truncated-BPTT training of a LanguageModel, with checkpoints, resume and a time budget.

State handling, at explicit points:
- The training text is laid out as `batch_size` contiguous streams (`StreamBatches`). The states
  that row r reaches at the end of batch k are fed, as plain values, as the initial states of
  row r in batch k+1, so gradients flow only through the `seq_length` steps of one batch.
- The states are reset to zero at the start of every epoch.
- Validation starts its own streams from zero states and never touches the training states.
- A checkpoint stores the training states, so a resumed run continues the same trajectory.
"""

import collections
import dataclasses
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from textgen import config as config_lib
from textgen.distribution import (StreamPlacement, batch_parts, is_chief, make_strategy,
                                  stop_agreement, use_one_thread_per_part)
from textgen.corpus import StreamBatches, minimum_corpus_length, read_text, split_train_validation
from textgen.errors import TrainingDiverged, UsageError
from textgen.io import export_disk_full, is_disk_full
from textgen.language_model import LanguageModel
from textgen.run_directory import RunDirectory, assign_variables, releases_lock
from textgen.stop_request import StopRequest
from textgen.tokenizers import make_tokenizer
from textgen.vocabulary import Vocabulary

LN2 = math.log(2.0)
UNKNOWN = "<unk>"


def metrics(nats, characters_per_token=1.0):
    """Loss in the units people compare: nats per token, perplexity, and bits per character of
    the original text (total nats over total characters, divided by ln 2), which compares char-
    and word-level models on the same text."""
    return {"nats": nats, "perplexity": math.exp(min(nats, 700.0)),
            "bits_per_char": nats / characters_per_token / LN2}


def format_metrics(name, nats, characters_per_token=1.0, level="char"):
    m = metrics(nats, characters_per_token)
    if level == "char":
        return (f"{name} {m['nats']:.4f} nats/char  {m['bits_per_char']:.4f} bits/char  "
                f"perplexity {m['perplexity']:.2f}")
    return (f"{name} {m['nats']:.4f} nats/token  perplexity {m['perplexity']:.2f}  "
            f"{m['bits_per_char']:.4f} bits/char")


def make_optimizer(config):
    # Clipping happens in the train step, after the cross-replica sum, so that it means the same
    # on one device and on many (Keras would clip each replica's share before summing).
    clip = {}
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate, **clip)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(config.learning_rate, rho=0.95, **clip)
    if config.optimizer == "adagrad":
        # min-char-rnn's optimizer: accumulators start at 0 and epsilon is 1e-8.
        return keras.optimizers.Adagrad(config.learning_rate, initial_accumulator_value=0.0,
                                        epsilon=1e-8, **clip)
    return keras.optimizers.SGD(config.learning_rate, **clip)


def build_model(config, vocabulary):
    fused = {"auto": None, "on": True, "off": False}[config.fused]
    model = LanguageModel(vocabulary, cell=config.cell, num_layers=config.num_layers,
                          hidden_size=config.hidden_size, embedding_size=config.embedding_size,
                          dropout=config.dropout, fused=fused, seed=config.seed,
                          level=config.level,
                          segmenter=None if config.level == "char" else config.segmenter)
    model.build()
    return model


def load_language_model(run_directory):
    """The trained model of a run directory (weights from its checkpoint)."""
    run = RunDirectory(run_directory)
    run.require_checkpoint()
    config = config_lib.from_dict(run.load_config(config_lib.TrainConfig))
    model = build_model(config, run.load_vocabulary())
    groups, _ = run.load_checkpoint()
    assign_variables(model.variables, groups.get("model", []), "model")
    return model


@dataclasses.dataclass
class TrainResult:
    run_directory: str
    global_step: int
    epoch: int
    step_losses: list          # training loss of every step, in nats/char, since the run began
    history: list              # one dict per finished epoch (train and validation metrics)
    final_val_loss: float      # nats/char on the validation text with the final weights
    stopped_by: str            # "epochs", "max_steps", "max_minutes" or "done" (nothing left to train)
    states: list               # the training states after the last step


def nothing_left_to_train(config, progress):
    """The line to print when a resumed run has nothing left to train (it is already at
    --max-steps, or past its last epoch), or None."""
    if config.max_steps and progress["global_step"] >= config.max_steps:
        return (f"{config.out} is already at global step {progress['global_step']} (--max-steps "
                f"{config.max_steps}): nothing to do; pass a larger --max-steps to train further")
    if progress["epoch"] >= config.epochs:
        return (f"{config.out} has already trained its {config.epochs} epochs: nothing to do; "
                "pass a larger --epochs to train further")
    return None


def build_vocabulary(tokens, config):
    """Characters sorted by code point; words by falling count, rare ones mapped to <unk>."""
    limited = config.min_count > 1 or config.max_vocab > 0
    if config.level == "char" and not limited:
        return Vocabulary.from_characters(tokens)
    vocabulary = Vocabulary.from_tokens(tokens, specials=[UNKNOWN], min_count=config.min_count,
                                        max_size=config.max_vocab or None, unknown_token=UNKNOWN)
    if len(vocabulary) < 2:
        top = max(collections.Counter(tokens).values())
        raise UsageError(f"--min-count {config.min_count} leaves no token in the vocabulary (the "
                         f"most frequent one occurs {top} times); lower --min-count")
    return vocabulary


class Trainer:
    def __init__(self, config, explicit=(), log=None, progress_bar=None):
        self.config = config
        self.explicit = set(explicit)
        self.log = log if log is not None else (lambda message: tqdm.write(message, file=sys.stdout))
        self.progress_bar = progress_bar

    # ---- set-up: every check happens before anything is written ----
    def prepare(self):
        config = self.config
        run = RunDirectory(config.out)
        if config.resume:
            config = run.resumed_config(self.config, self.explicit, config_lib.from_dict,
                                            config_lib.RUN_IDENTITY)
        config_lib.validate(config)
        if not config.resume and is_chief():
            run.require_new()
        self.config = config
        self.run = run
        if config.resume and is_chief():
            run.lock()  # before anything is read: another process may be writing the checkpoint

        text = read_text(config.data, config.encoding, config.keep_newlines)
        tokenizer = make_tokenizer(config.level, config.segmenter, text)
        if config.level == "word":
            config.segmenter = tokenizer.name  # "auto" resolved, so the run always reloads the same way
        tokens = tokenizer.tokenize(text)
        self.unit = "characters" if config.level == "char" else "tokens"
        if config.resume:
            self.vocabulary = run.load_vocabulary()
            missing = self.vocabulary.unknown(tokens) if self.vocabulary.unknown_token is None else []
            if missing:
                raise UsageError(f"{config.data} has characters the run's vocabulary lacks "
                                 f"({''.join(missing[:20])!r}); resume with the corpus the run was "
                                 "started with")
        else:
            self.vocabulary = build_vocabulary(tokens, config)
        minimum = minimum_corpus_length(config.batch_size, config.seq_length, config.val_fraction)
        if len(tokens) < minimum:
            raise UsageError(
                f"{config.data} has {len(tokens)} {self.unit}, too few for --batch-size "
                f"{config.batch_size} x --seq-length {config.seq_length} with --val-fraction "
                f"{config.val_fraction}; it needs at least {minimum}: use a longer corpus or "
                "smaller --batch-size/--seq-length")
        ids = np.asarray(self.vocabulary.encode(tokens), dtype=np.int32)
        self.coverage = 1.0
        if self.vocabulary.unknown_token is not None:
            self.coverage = float(np.mean(ids != self.vocabulary.id(self.vocabulary.unknown_token)))
        train_ids, val_ids = split_train_validation(ids, config.val_fraction)
        val_tokens = tokens[len(tokens) - len(val_ids):]
        # Bits per character are measured against the original text the validation tokens cover.
        self.characters_per_token = len(tokenizer.detokenize(val_tokens)) / max(1, len(val_tokens))
        self.train_batches = StreamBatches(train_ids, config.batch_size, config.seq_length)
        val_rows = min(config.batch_size, (len(val_ids) - 1) // config.seq_length)
        self.val_batches = StreamBatches(val_ids, val_rows, config.seq_length)

        # Resolved here, before TensorFlow runs its first op (the thread setting needs that), and
        # saved with the config, so that a resumed run splits its batches the same way.
        config.batch_parts = batch_parts(config.batch_parts, config.batch_size, config.strategy)
        use_one_thread_per_part(config.batch_parts)
        self.strategy = make_strategy(config.strategy)
        self.placement = StreamPlacement(self.strategy, config.batch_size)
        self.chief = is_chief()
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = build_model(config, self.vocabulary)
            self.optimizer = make_optimizer(config)
            self.optimizer.build(self.model.trainable_variables)
        self.progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "step_losses": [],
                         "history": [], "rng": None}
        self.rng = np.random.default_rng(config.seed)
        self.states = self.zero_states()
        if config.resume:
            self._restore()
        elif self.chief:
            run.claim_new()
            run.save_config(config_lib.to_dict(config))
            run.save_vocabulary(self.vocabulary)
        self._compile_steps()

    def _restore(self):
        groups, progress = self.run.load_checkpoint(self.config.resume_from)
        assign_variables(self.model.variables, groups.get("model", []), "model")
        assign_variables(self.optimizer.variables, groups.get("optimizer", []), "optimizer")
        states = groups.get("states", [])
        expected = (self.config.batch_size, self.config.hidden_size)
        if len(states) != len(self.states) or any(s.shape != expected for s in states):
            raise UsageError("the checkpoint's recurrent states do not match --batch-size/--hidden-size")
        self.states = [self.placement.distribute(s) for s in states]
        self.progress = progress
        if progress.get("rng"):
            self.rng.bit_generator.state = progress["rng"]

    def zero_states(self):
        """State reset: zeros for every stream, placed on the replica that owns it."""
        return [self.placement.distribute(np.zeros((self.config.batch_size, self.config.hidden_size),
                                                   np.float32))
                for _ in self.model.initial_states(1)]

    def _compile_steps(self):
        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        replicas = strategy.num_replicas_in_sync
        tokens_per_batch = self.config.batch_size * self.config.seq_length
        clip = self.config.grad_clip

        parts = self.config.batch_parts
        rows = self.config.batch_size
        # Rows per group; one group (also each replica's share under a strategy) splits as is.
        splits = 1 if parts == 1 else [rows // parts + (p < rows % parts) for p in range(parts)]

        def summed_loss(inputs, targets, states):
            """(summed loss, new states). With --batch-parts, each group of streams is its own
            branch of the graph (model call, loss and, through the tape, backward pass), and
            TensorFlow runs independent branches in parallel: on a CPU that keeps the cores
            busier than splitting every small per-step op over all of them. The sum, and so the
            gradient, is the same function of the weights; only float rounding (and the
            dropout masks drawn) differ."""
            groups = zip(tf.split(inputs, splits), tf.split(targets, splits),
                         zip(*[tf.split(s, splits) for s in states]))
            totals, group_states = [], []
            for group_inputs, group_targets, group_state in groups:
                logits, new_states = model(group_inputs, list(group_state), training=True)
                totals.append(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    group_targets, logits)))
                group_states.append(new_states)
            return tf.add_n(totals), [tf.concat(list(s), 0) for s in zip(*group_states)]

        def replica_step(inputs, targets, states):
            with tf.GradientTape() as tape:
                total, new_states = summed_loss(inputs, targets, states)
                # Summed over this replica's rows, divided by the global count: the replicas'
                # losses (and gradients) add up to the global mean.
                loss = total / tokens_per_batch
            variables = model.trainable_variables
            gradients = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
            if replicas > 1:
                gradients = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, gradients)
            if clip > 0:
                gradients, _ = tf.clip_by_global_norm(gradients, clip)
            if replicas > 1:
                # The optimizer sums over replicas again; hand it each replica's equal share.
                gradients = [g / replicas for g in gradients]
            optimizer.apply_gradients(zip(gradients, variables))
            return loss, new_states

        @tf.function(reduce_retracing=True)
        def train_step(inputs, targets, states):
            losses, new_states = strategy.run(replica_step, args=(inputs, targets, states))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None), new_states

        @tf.function(reduce_retracing=True)
        def eval_step(inputs, targets, states):
            logits, new_states = model(inputs, states, training=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
            return loss, new_states

        self.train_step, self.eval_step = train_step, eval_step

    # ---- the loop ----
    def evaluate(self):
        """Mean validation loss (nats/token) over the validation streams, from zero states."""
        states = self.model.initial_states(self.val_batches.batch_size)
        total = 0.0
        for inputs, targets in self.val_batches:
            if not self.config.stateful:
                states = self.model.initial_states(self.val_batches.batch_size)
            loss, states = self.eval_step(inputs, targets, states)
            total += float(loss)
        return total / len(self.val_batches)

    def checkpoint(self):
        """Every worker gathers the states (a collective); only the chief writes."""
        states = [self.placement.gather(s) for s in self.states]
        if not self.chief:
            return
        self.progress["rng"] = self.rng.bit_generator.state
        self.run.save_checkpoint(
            {"model": [v.numpy() for v in self.model.variables],
             "optimizer": [v.numpy() for v in self.optimizer.variables],
             "states": states},
            self.progress)

    def export(self):
        """RUN_DIR/saved_model: text in, text out, loadable without this project."""
        from textgen.export import export_saved_model

        path = os.path.join(self.config.out, "saved_model")
        try:
            export_saved_model(self.model, path, overwrite=True)
        except UsageError as error:  # e.g. jieba models, which cannot tokenise in the graph
            self.log(f"no SavedModel exported: {error}")
            return
        except Exception as error:
            if is_disk_full(error):
                raise export_disk_full(path, self.model.variables,
                                       f"python -m textgen.export {self.config.out} {path} --overwrite") from None
            raise
        self.log(f"exported a SavedModel to {path}")

    def format(self, name, nats):
        return format_metrics(name, nats, self.characters_per_token, self.config.level)

    def learning_rate(self, epoch):
        c = self.config
        # Epochs 0 .. lr_decay_after-1 run at the initial rate; each later one is decayed once more.
        return c.learning_rate * c.lr_decay ** max(0, epoch + 1 - c.lr_decay_after)

    def show_sample(self):
        seed = int(self.rng.integers(2**31 - 1))
        text = self.model.sample(length=self.config.sample_length, seed=seed)[0]
        self.log(f"---- sample at step {self.progress['global_step']} ----\n{text}\n----")

    @releases_lock
    def train(self):
        c, p = self.config, self.progress
        batches = self.train_batches
        started = time.monotonic()
        initial_loss = math.log(len(self.vocabulary))
        stopped_by = "epochs"
        val = None  # validation loss of the current weights, when known
        coverage = (f" (coverage {self.coverage:.2%} of tokens are not <unk>)"
                    if self.vocabulary.unknown_token is not None else "")
        self.log(f"vocabulary {len(self.vocabulary)} {self.unit}{coverage}; train "
                 f"{batches.inputs.size:,} / validation {self.val_batches.inputs.size:,} "
                 f"{self.unit}; {len(batches)} batches "
                 f"of {c.batch_size} x {c.seq_length} per epoch; "
                 f"{self.model.count_params():,} parameters"
                 + (f"; {c.batch_parts} groups of streams in parallel" if c.batch_parts > 1 else ""))
        done = nothing_left_to_train(c, p)
        if done:
            self.log(done)
            last = p["history"][-1] if p["history"] else {}
            final_val = last["val"] if last.get("global_step") == p["global_step"] else float("nan")
            return TrainResult(c.out, p["global_step"], p["epoch"], list(p["step_losses"]),
                               list(p["history"]), final_val, "done",
                               [self.placement.gather(s) for s in self.states])
        if p["global_step"]:
            self.log(f"resuming {c.out} at epoch {p['epoch'] + 1}, step {p['step_in_epoch']} "
                     f"(global step {p['global_step']})")
        stop_request, agree = StopRequest(self.log), stop_agreement(self.strategy)
        with stop_request:
            while p["epoch"] < c.epochs:
                if p["step_in_epoch"] == 0:
                    # State reset point: every epoch starts its streams from zero states.
                    self.states = self.zero_states()
                self.optimizer.learning_rate.assign(self.learning_rate(p["epoch"]))
                bar = tqdm(total=len(batches) * batches.tokens_per_batch,
                           unit="char" if c.level == "char" else "tok", unit_scale=True,
                           initial=p["step_in_epoch"] * batches.tokens_per_batch,
                           desc=f"epoch {p['epoch'] + 1}/{c.epochs}", leave=False,
                           disable=None if self.progress_bar is None else not self.progress_bar,
                           dynamic_ncols=True)
                with bar:
                    while p["step_in_epoch"] < len(batches):
                        inputs, targets = batches[p["step_in_epoch"]]
                        if not c.stateful:
                            self.states = self.zero_states()
                        loss, states = self.train_step(self.placement.distribute(inputs),
                                                       self.placement.distribute(targets),
                                                       self.states)
                        loss = float(loss)
                        if not math.isfinite(loss) or loss > 3 * initial_loss:
                            raise TrainingDiverged(
                                f"the training loss became {loss} at step {p['global_step'] + 1}; "
                                f"the last good checkpoint in {c.out} is intact. Lower "
                                f"--learning-rate (now {c.learning_rate}) or --grad-clip and "
                                "--resume")
                        self.states = states
                        val = None
                        p["step_in_epoch"] += 1
                        p["global_step"] += 1
                        p["step_losses"].append(loss)
                        bar.update(batches.tokens_per_batch)
                        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                        if agree(stop_request.requested):
                            self.checkpoint()  # every worker: it gathers the states
                            raise stop_request.error(p["global_step"])
                        if c.sample_every and p["global_step"] % c.sample_every == 0:
                            self.show_sample()
                        if c.max_steps and p["global_step"] >= c.max_steps:
                            stopped_by = "max_steps"
                        elif c.max_minutes and time.monotonic() - started >= c.max_minutes * 60:
                            stopped_by = "max_minutes"
                        if stopped_by != "epochs":
                            break
                        if (p["step_in_epoch"] < len(batches)
                                and p["global_step"] % c.checkpoint_every == 0):
                            self.checkpoint()
                if stopped_by != "epochs" and p["step_in_epoch"] < len(batches):
                    break
                val = self.evaluate()
                # The epoch's steps, counting those before a resume.
                epoch_losses = p["step_losses"][len(p["step_losses"]) - p["step_in_epoch"]:]
                train = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
                p["history"].append({"epoch": p["epoch"] + 1, "global_step": p["global_step"],
                                     "seconds": time.monotonic() - started, "train": train,
                                     "val": val, "val_bits_per_char": metrics(
                                         val, self.characters_per_token)["bits_per_char"],
                                     "learning_rate": float(self.optimizer.learning_rate.numpy())})
                self.log(f"epoch {p['epoch'] + 1}/{c.epochs}  {self.format('train', train)}  |  "
                         f"{self.format('val', val)}")
                p["epoch"] += 1
                p["step_in_epoch"] = 0
                self.checkpoint()
                if stopped_by != "epochs":
                    break
            self.checkpoint()
        if c.export and self.chief:
            self.export()
        final_val = self.evaluate() if val is None else val
        p["final"] = {"global_step": p["global_step"], "seconds": time.monotonic() - started,
                      "val": final_val}
        self.log(f"stopped by {stopped_by} at global step {p['global_step']}: "
                 f"{self.format('val', final_val)}; checkpoint in {c.out}")
        return TrainResult(c.out, p["global_step"], p["epoch"], list(p["step_losses"]),
                           list(p["history"]), final_val, stopped_by,
                           [self.placement.gather(s) for s in self.states])


def train(config, explicit=(), log=None, progress_bar=None):
    """Trains (or resumes) the run `config.out`. Raises UsageError for bad input, before writing;
    TrainingInterrupted after SIGINT/SIGTERM, with the checkpoint written."""
    trainer = Trainer(config, explicit, log, progress_bar)
    try:
        trainer.prepare()
        return trainer.train()
    finally:
        if getattr(trainer, "run", None) is not None:
            trainer.run.unlock()
