"""Training a Captioner: tf.data batches, teacher forcing, a masked loss, checkpoints and resume.

Mirrors textgen's trainer: a `tf.function` train step, Keras Adam with global-norm clipping, a
RunDirectory (config.json, vocab.json, atomic checkpoint.npz of plain arrays, read without
pickle) whose checkpoint groups are the model's variables, the optimizers' variables and a
progress JSON; --max-minutes, a tqdm progress bar (images/s and ETA), a NaN/explosion abort that
keeps the last good checkpoint, and a resume that continues the uninterrupted run's trajectory.

Why resume is exact: the model's variables include the dropout layers' seed-generator states,
the optimizers' variables include their step counters, and an epoch's image order and caption
choice depend only on (seed, epoch) (`CaptionSet.epoch_plan`), so nothing random lives outside
the checkpoint.

Encoders: the small CNN is trained end to end with the decoder by one optimizer. A pretrained
backbone is frozen: its pooled features are computed once (and cached on disk), and training
runs on them, reading no image. From epoch --fine-tune-after on, the backbone is unfrozen and
trained on pixels by its own Adam optimizer at --encoder-learning-rate (neuraltalk2's
finetune_cnn_after); its BatchNorm statistics stay frozen.

Several devices or hosts (--strategy, tf.distribute): --batch-size is the global batch. Replica r
gets a fixed contiguous share of every batch's rows; each replica sums its tokens' losses and
divides by the global token count (summed over the replicas first), so the replicas' gradients
add up to the one-device gradient. The gradients are summed over the replicas and clipped by
their global norm in the step (Keras would clip each replica's share before summing), and batch
normalisation in training uses the statistics of the global batch (synchronized). So a mirrored
run follows the one-device trajectory; only dropout masks differ (drawn per replica). Only the
chief writes the run directory; every worker restores from it.
"""

import dataclasses
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from captioning import config as config_lib
from captioning.caption_data import ArraySource, CaptionSet, FileSource, decode_images
from captioning.captioner import Captioner
from captioning.captions import build_vocabulary, check_vocabulary, tokenize
from captioning.coco_data import is_karpathy, read_captions, read_json
from captioning.evaluate import format_scores, score_captions
from captioning.feature_cache import FeatureCache
from captioning.decoding import caption_features
from captioning.losses import masked_cross_entropy, teacher_forcing
from textgen.distribution import is_chief, make_strategy, stop_agreement
from textgen.errors import TrainingDiverged, UsageError
from textgen.io import atomic_write_text, export_disk_full, is_disk_full
from textgen.run_directory import RunDirectory, assign_variables, releases_lock
from textgen.stop_request import StopRequest
from textgen.trainer import metrics, nothing_left_to_train

DECODE_BATCH = 64  # images per batch of the one-time decoding / feature pass


def format_loss(name, nats):
    m = metrics(nats)
    return f"{name} {m['nats']:.4f} nats/token  perplexity {m['perplexity']:.2f}"


def make_optimizer(learning_rate, grad_clip):
    clip = {"global_clipnorm": grad_clip} if grad_clip > 0 else {}
    return keras.optimizers.Adam(learning_rate, **clip)


def build_model(config, vocabulary, encoder_weights=None):
    """The Captioner a config describes; `encoder_weights` overrides the config's (e.g. "none"
    when the weights come from a checkpoint anyway)."""
    fused = {"auto": None, "on": True, "off": False}[config.fused]
    model = Captioner(vocabulary, encoder=config.encoder,
                      encoder_weights=encoder_weights or config_lib.resolved_encoder_weights(config),
                      image_size=config_lib.resolved_image_size(config),
                      feature_size=config.feature_size,
                      encoder_filters=config_lib.parse_filters(config.encoder_filters),
                      encoder_spatial=config.encoder_spatial,
                      cell=config.cell, num_layers=config.num_layers,
                      hidden_size=config.hidden_size, embedding_size=config.embedding_size,
                      dropout=config.dropout, fused=fused, seed=config.seed)
    model.build()
    return model


def load_captioner(run_directory):
    """(model with the checkpoint's weights, its CaptionTrainConfig) of a training run."""
    run = RunDirectory(run_directory)
    if not run.has_checkpoint():
        raise UsageError(f"{run.path} holds no checkpoint ({run.CHECKPOINT}); train first with "
                         f"`python -m captioning.train --out {run.path} ...`")
    config = config_lib.from_dict(run.load_config(config_lib.CaptionTrainConfig))
    vocabulary = run.load_vocabulary()
    check_vocabulary(vocabulary, run.vocabulary_path)
    model = build_model(config, vocabulary, encoder_weights="none")
    groups, _ = run.load_checkpoint()
    assign_variables(model.variables, groups.get("model", []), "model")
    return model, config


def hold_out(records, fraction, seed):
    """(train, validation): a seeded random `fraction` of the images (at least one) held out."""
    if len(records) < 2:
        raise UsageError("only one usable training image: too few to hold out validation images; "
                         "pass --val-annotations")
    count = min(len(records) - 1, max(1, round(fraction * len(records))))
    order = np.random.default_rng([seed, 7]).permutation(len(records))
    held = set(order[:count].tolist())
    return ([r for i, r in enumerate(records) if i not in held],
            [r for i, r in enumerate(records) if i in held])


@dataclasses.dataclass
class CaptionTrainResult:
    run_directory: str
    global_step: int
    epoch: int
    step_losses: list          # training loss of every step (nats/token) since the run began
    history: list              # one dict per finished epoch (train and validation metrics)
    final_val_loss: float      # nats/token on the validation captions with the final weights
    stopped_by: str            # "epochs", "max_steps", "max_minutes" or "done" (nothing left to train)
    scores: dict | None        # greedy-caption scores on validation images (see evaluate.py)
    seconds: float             # wall time of the whole call


class CaptionTrainer:
    def __init__(self, config, explicit=(), log=None, progress_bar=None):
        self.config = config
        self.explicit = set(explicit)
        self.log = log if log is not None else (lambda message: tqdm.write(message, file=sys.stdout))
        self.progress_bar = progress_bar
        self.started = time.monotonic()

    # ---- set-up: every check on the input happens before anything is written ----
    def prepare(self):
        self.started = time.monotonic()
        config = self.config
        run = RunDirectory(config.out)
        if config.resume:
            config = run.resumed_config(self.config, self.explicit, config_lib.from_dict,
                                            config_lib.RUN_IDENTITY)
        config_lib.validate(config)
        if not config.resume and is_chief():
            run.require_new()
        self.config, self.run = config, run
        if config.resume and is_chief():
            run.lock()  # before anything is read: another process may be writing the checkpoint

        # COCO files are one split each; a Karpathy file (dataset_coco.json) holds all of them:
        # training reads its "train" + "restval" images and validates on its "val" images.
        train_records = read_captions(config.annotations, config.images, "train",
                                      config.check_images, log=self.log)
        if config.val_annotations:
            val_records = read_captions(config.val_annotations, config.val_images or config.images,
                                        "val", config.check_images, log=self.log)
        elif is_karpathy(read_json(config.annotations)):
            val_records = read_captions(config.annotations, config.val_images or config.images,
                                        "val", config.check_images, log=self.log)
        else:
            train_records, val_records = hold_out(train_records, config.val_fraction, config.seed)
        if config.resume:
            vocabulary = run.load_vocabulary()
            check_vocabulary(vocabulary, run.vocabulary_path)
        else:
            vocabulary = build_vocabulary((tokenize(c) for r in train_records
                                           for c in r.captions[:config.first_captions or None]),
                                          min_count=config.min_count)
        self.vocabulary = vocabulary
        self.train_set = CaptionSet(train_records, vocabulary, config.max_length, config.first_captions)
        self.val_set = CaptionSet(val_records, vocabulary, config.max_length, config.first_captions)

        self.strategy = make_strategy(config.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % self.replicas:
            raise UsageError(f"--batch-size {config.batch_size} (the global batch) does not divide "
                             f"over {self.replicas} replicas; pass a multiple of {self.replicas}")
        self.chief = is_chief()
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = build_model(config, vocabulary)
            self.pretrained = self.model.encoder.pretrained
            self.decoder_vars = (self.model.decoder_variables() if self.pretrained
                                 else self.model.trainable_variables)
            self.optimizer = make_optimizer(config.learning_rate, self._optimizer_clip())
            self.optimizer.build(self.decoder_vars)
        if self.replicas > 1:
            # Training batch statistics of the global batch, as on one device.
            for layer in self.model._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        self.encoder_optimizer = None
        self.fine_tuning = False
        self.progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "step_losses": [],
                         "history": [], "fine_tuning": False}
        if config.resume:
            self._restore()
        elif self.chief:
            run.claim_new()
            run.save_config(config_lib.to_dict(config))
            run.save_vocabulary(vocabulary)
        self._prepare_sources()
        self._compile_steps()

    def _restore(self):
        groups, progress = self.run.load_checkpoint(self.config.resume_from)
        assign_variables(self.model.variables, groups.get("model", []), "model")
        assign_variables(self.optimizer.variables, groups.get("optimizer", []), "optimizer")
        self.progress = progress
        if progress.get("fine_tuning"):
            self._unfreeze()
            assign_variables(self.encoder_optimizer.variables, groups.get("encoder_optimizer", []),
                             "encoder optimizer")

    def _optimizer_clip(self):
        """Keras' own clipping on one device; under a strategy the step clips the summed gradients."""
        return self.config.grad_clip if self.replicas == 1 else 0.0

    def _unfreeze(self):
        self.model.encoder.set_backbone_trainable(True)
        with self.strategy.scope():
            self.encoder_optimizer = make_optimizer(self.config.encoder_learning_rate,
                                                    self._optimizer_clip())
            self.encoder_optimizer.build(self.model.encoder_variables())
        self.fine_tuning = self.progress["fine_tuning"] = True

    # ---- data: decode every image once; features for a frozen backbone ----
    def _prepare_sources(self):
        uses_features = self.pretrained and not self.fine_tuning
        prepare = self._feature_source if uses_features else self._pixel_source
        self.train_source, kept = prepare(self.train_set, "training")
        if len(kept) < len(self.train_set):
            self.train_set = self.train_set.subset(kept)
        self.val_source, kept = prepare(self.val_set, "validation")
        if len(kept) < len(self.val_set):
            self.val_set = self.val_set.subset(kept)

    def _report_failures(self, errors, total, what):
        for index in sorted(errors):
            self.log(f"skipped image {errors[index]}")
        if errors:
            self.log(f"{what}: skipped {len(errors)} of {total} images that failed to decode (named above)")
        if errors and len(errors) == total:
            raise UsageError(f"{what}: none of the {total} images could be decoded (see the lines above)")

    def _bar(self, total, unit, description, initial=0):
        disable = None if self.progress_bar is None else not self.progress_bar
        return tqdm(total=total, initial=initial, unit=unit, desc=description, disable=disable,
                    leave=False, dynamic_ncols=True)

    def _pixel_source(self, caption_set, what):
        size = self.model.image_size
        total = len(caption_set)
        in_memory = total * size * size * 3 <= self.config.image_memory_mb * 2 ** 20
        pixels = np.zeros((total, size, size, 3), np.uint8) if in_memory else None
        ok = np.zeros(total, bool)
        errors = {}
        paths = [r.path for r in caption_set.records]
        with self._bar(total, "img", f"decoding {what} images") as bar:
            for indices, batch, batch_ok in decode_images(paths, size, DECODE_BATCH, errors):
                if in_memory:
                    pixels[indices] = batch
                ok[indices] = batch_ok
                bar.update(len(indices))
        self._report_failures(errors, total, what)
        kept = np.flatnonzero(ok)
        if not in_memory:
            self.log(f"{what}: {total} images of {size}x{size} exceed --image-memory-mb "
                     f"{self.config.image_memory_mb}; they are decoded again every epoch")
            return FileSource([paths[i] for i in kept], size), kept
        return ArraySource(pixels if len(kept) == total else pixels[kept]), kept

    def feature_cache(self):
        config = self.config
        root = config.feature_cache or os.path.join(config.out, "feature_cache")
        encoder = self.model.encoder
        return FeatureCache(root, encoder.backbone_name, encoder.weights_key(), encoder.image_size)

    def _feature_source(self, caption_set, what):
        cache = self.feature_cache()
        total, size = len(caption_set), self.model.feature_size
        features = np.zeros((total, size), np.float32)
        have = np.zeros(total, bool)
        for i, record in enumerate(caption_set.records):
            vector = cache.load(record.image_id)
            if vector is not None and vector.shape == (size,):
                features[i], have[i] = vector, True
        missing = np.flatnonzero(~have)
        if len(missing):
            self.log(f"{what}: computing {self.config.encoder} features of {len(missing)} images "
                     f"({total - len(missing)} cached) into {cache.directory}")
            encode = tf.function(lambda pixels: self.model.encode(pixels, training=False),
                                 reduce_retracing=True, autograph=False)
            errors = {}
            paths = [caption_set.records[i].path for i in missing]
            with self._bar(len(missing), "img", f"{what} features") as bar:
                for indices, pixels, ok in decode_images(paths, self.model.image_size, DECODE_BATCH, errors):
                    vectors = encode(pixels).numpy()
                    for j, k in enumerate(indices):
                        if ok[j]:
                            i = missing[k]
                            features[i], have[i] = vectors[j], True
                            cache.save(caption_set.records[i].image_id, vectors[j])
                    bar.update(len(indices))
            self._report_failures({missing[k]: e for k, e in errors.items()}, total, what)
        kept = np.flatnonzero(have)
        return ArraySource(features if len(kept) == total else features[kept]), kept

    # ---- steps ----
    def _compile_steps(self):
        model, optimizer, encoder_optimizer = self.model, self.optimizer, self.encoder_optimizer
        pad = model.pad_id
        uses_pixels = self.train_source.kind == "pixels"
        decoder_vars = self.decoder_vars
        encoder_vars = model.encoder_variables() if self.fine_tuning else []

        def batch_loss(inputs, captions, training):
            features = model.encode(inputs, training=training) if uses_pixels else inputs
            features = tf.repeat(features, tf.shape(captions)[1], axis=0)
            captions = tf.reshape(captions, [-1, tf.shape(captions)[2]])
            # Drop the columns that are <pad> in every caption of the batch (keeping <start> and
            # one more: under a strategy, a replica's share of a short last batch may be empty).
            length = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(captions != pad, tf.int32),
                                                            axis=1)), 2)
            inputs, targets = teacher_forcing(captions[:, :length])
            outputs, _ = model.decode(features, inputs, training=training)
            return masked_cross_entropy(targets, model.output_layer(outputs), pad)

        # One trace for every batch size. With one trace per size seen, a run resumed just before
        # an epoch's short last batch traces that size first, its full batches then run on the
        # general trace instead of the full-size one, and the kernels chosen for a static batch
        # size round differently: the resumed run drifts from the uninterrupted one.
        signature = self._batches(self.train_source, self.train_set, *self.train_set.fixed_plan(
            self.config.seed, self.config.captions_per_image)).element_spec

        @tf.function(input_signature=signature, autograph=False)
        def train_step(inputs, captions):
            with tf.GradientTape() as tape:
                total, count = batch_loss(inputs, captions, True)
                loss = total / tf.maximum(count, 1.0)
            gradients = tape.gradient(loss, decoder_vars + encoder_vars)
            optimizer.apply_gradients(zip(gradients[:len(decoder_vars)], decoder_vars))
            if encoder_vars:
                encoder_optimizer.apply_gradients(zip(gradients[len(decoder_vars):], encoder_vars))
            return total, count

        @tf.function(input_signature=signature, autograph=False)
        def eval_step(inputs, captions):
            return batch_loss(inputs, captions, False)

        self.train_step, self.eval_step = train_step, eval_step
        if self.replicas > 1:
            self.train_step = self._distributed_train_step(batch_loss, decoder_vars, encoder_vars)

    def _distributed_train_step(self, batch_loss, decoder_vars, encoder_vars):
        """The train step under a strategy: (summed loss, token count) of the global batch."""
        optimizer, encoder_optimizer, strategy = self.optimizer, self.encoder_optimizer, self.strategy
        replicas, clip = self.replicas, self.config.grad_clip
        SUM = tf.distribute.ReduceOp.SUM

        def replica_step(inputs, captions):
            # Every replica's graph must issue the same collectives in the same order; a share
            # whose batch size is statically 0 (of a short last batch) would be traced differently.
            inputs, captions = [tf.compat.v1.placeholder_with_default(x, [None] + x.shape[1:])
                                for x in (inputs, captions)]
            context = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                total, count = batch_loss(inputs, captions, True)
                # This replica's summed loss over the global token count: the replicas' losses
                # (and gradients) add up to the one-device mean.
                loss = total / tf.maximum(context.all_reduce(SUM, count), 1.0)
            gradients = [tf.convert_to_tensor(g) for g in
                         tape.gradient(loss, decoder_vars + encoder_vars)]
            gradients = context.all_reduce(SUM, gradients)
            groups = [gradients[:len(decoder_vars)], gradients[len(decoder_vars):]]
            if clip > 0:  # each optimizer clips its own gradients, as Keras does on one device
                groups = [tf.clip_by_global_norm(g, clip)[0] if g else g for g in groups]
            # The optimizers sum over the replicas again; hand them each replica's equal share.
            groups = [[g / replicas for g in group] for group in groups]
            optimizer.apply_gradients(zip(groups[0], decoder_vars))
            if encoder_vars:
                encoder_optimizer.apply_gradients(zip(groups[1], encoder_vars))
            return total, count

        @tf.function(reduce_retracing=True, autograph=False)
        def train_step(inputs, captions):
            total, count = strategy.run(replica_step, args=(inputs, captions))
            return strategy.reduce(SUM, total, axis=None), strategy.reduce(SUM, count, axis=None)

        return train_step

    def _distribute(self, inputs, captions):
        """Replica r gets its contiguous share of the batch's rows (the last, short batch splits
        as evenly as it can; `images_per_epoch` makes sure no replica gets none)."""
        if self.replicas == 1:
            return inputs, captions
        rows = int(inputs.shape[0])
        bounds = [rows * r // self.replicas for r in range(self.replicas + 1)]

        def share(array):
            return self.strategy.experimental_distribute_values_from_function(
                lambda context: array[bounds[context.replica_id_in_sync_group]:
                                      bounds[context.replica_id_in_sync_group + 1]])

        return share(inputs), share(captions)

    def images_per_epoch(self):
        """The training images an epoch uses: all of them, except that under several replicas a
        last batch smaller than the replica count is left out. Such a batch would leave a replica
        with no image, and synchronized batch normalisation over an empty share fails under
        TensorFlow's oneDNN CPU kernels (a collective shape mismatch). The order is reshuffled
        every epoch, so the left-out images differ from epoch to epoch."""
        total, remainder = len(self.train_set), len(self.train_set) % self.config.batch_size
        return total - remainder if 0 < remainder < self.replicas else total

    def steps_per_epoch(self):
        return math.ceil(self.images_per_epoch() / self.config.batch_size)

    def _batches(self, source, caption_set, order, rows):
        return source.batches(order, rows, caption_set.captions, self.config.batch_size)

    def evaluate(self):
        """Validation loss in nats per caption token (every <end> counts, no <pad> does)."""
        order, rows = self.val_set.fixed_plan(self.config.seed, self.config.captions_per_image)
        total = count = 0.0
        for inputs, captions in self._batches(self.val_source, self.val_set, order, rows):
            batch_total, batch_count = self.eval_step(inputs, captions)
            total += float(batch_total)
            count += float(batch_count)
        return total / max(count, 1.0)

    def checkpoint(self):
        if not self.chief:
            return
        groups = {"model": [v.numpy() for v in self.model.variables],
                  "optimizer": [v.numpy() for v in self.optimizer.variables]}
        if self.encoder_optimizer is not None:
            groups["encoder_optimizer"] = [v.numpy() for v in self.encoder_optimizer.variables]
        self.run.save_checkpoint(groups, self.progress)

    def run_fraction(self):
        """How much of the run is behind us, from 0 to 1: the largest of the fractions of
        --epochs, --max-steps and (this invocation's) --max-minutes used so far."""
        c, p = self.config, self.progress
        fractions = [p["global_step"] / (c.epochs * self.steps_per_epoch())]
        if c.max_steps:
            fractions.append(p["global_step"] / c.max_steps)
        if c.max_minutes:
            fractions.append((time.monotonic() - self.started) / (c.max_minutes * 60))
        return min(1.0, max(fractions))

    def learning_rate(self, epoch, fraction=0.0):
        """--lr-decay per epoch, times the --lr-schedule at `fraction` of the run. A constant rate
        leaves the weights where the noise of the last steps put them; the cosine anneals them.
        On the 15-minute shapes benchmark that was worth little with the `lines` encoder (81.8%
        and 84.2% correct against 81.2% constant) and hurt with `flatten` (74.6% against 79.0%),
        whose fit to the training scenes then generalised worse (README, caption quality)."""
        c = self.config
        rate = c.learning_rate
        if c.lr_schedule == "cosine":
            rate = c.min_learning_rate + (rate - c.min_learning_rate) * 0.5 * (1 + math.cos(math.pi * fraction))
        return rate * c.lr_decay ** max(0, epoch - c.lr_decay_after)

    def _start_fine_tuning(self):
        self.log(f"epoch {self.progress['epoch'] + 1}: fine-tuning the {self.config.encoder} "
                 f"backbone from now on (learning rate {self.config.encoder_learning_rate})")
        self._unfreeze()
        self._prepare_sources()
        self._compile_steps()

    @releases_lock
    def train(self):
        c, p = self.config, self.progress
        steps = self.steps_per_epoch()
        used = f", the first {c.first_captions} of each used" if c.first_captions else ""
        self.log(f"vocabulary {len(self.vocabulary)} words; {len(self.train_set)} training images "
                 f"({len(self.train_set.captions)} captions{used}), {len(self.val_set)} validation images; "
                 f"{steps} batches of {c.batch_size} images x {c.captions_per_image} captions per "
                 f"epoch; {self.model.count_params():,} parameters "
                 f"({sum(int(np.prod(v.shape)) for v in self.model.trainable_variables):,} trained)")
        done = nothing_left_to_train(c, p)
        if done:
            self.log(done)
            last = p["history"][-1] if p["history"] else {}
            final_val = last["val"] if last.get("global_step") == p["global_step"] else float("nan")
            return CaptionTrainResult(c.out, p["global_step"], p["epoch"], list(p["step_losses"]),
                                      list(p["history"]), final_val, "done", None,
                                      time.monotonic() - self.started)
        if p["global_step"]:
            self.log(f"resuming {c.out} at epoch {p['epoch'] + 1}, step {p['step_in_epoch']} "
                     f"(global step {p['global_step']})")
        with StopRequest(self.log) as stop_request:
            stopped_by, val = self._train_epochs(stop_request)
        final_val = self.evaluate() if val is None else val
        self.log(f"stopped by {stopped_by} at global step {p['global_step']}: "
                 f"{format_loss('val', final_val)}; checkpoint in {c.out}")
        scores = self.score_validation() if c.eval_images and self.chief else None
        if c.export and self.chief:
            self.export()
        return CaptionTrainResult(c.out, p["global_step"], p["epoch"], list(p["step_losses"]),
                                  list(p["history"]), final_val, stopped_by, scores,
                                  time.monotonic() - self.started)

    def _train_epochs(self, stop_request):
        """The epoch and step loop: (stopped_by, validation loss of the final weights or None)."""
        c, p = self.config, self.progress
        initial_loss = math.log(len(self.vocabulary))
        stopped_by, val = "epochs", None
        steps = self.steps_per_epoch()
        agree = stop_agreement(self.strategy)
        while p["epoch"] < c.epochs:
            if (self.pretrained and not self.fine_tuning and c.fine_tune_after >= 0
                    and p["epoch"] >= c.fine_tune_after):
                self._start_fine_tuning()
            order, rows = self.train_set.epoch_plan(c.seed, p["epoch"], c.captions_per_image)
            images = self.images_per_epoch()
            order, rows = order[:images], rows[:images]
            first = p["step_in_epoch"] * c.batch_size
            batches = self._batches(self.train_source, self.train_set, order[first:], rows[first:])
            bar = self._bar(images, "img", f"epoch {p['epoch'] + 1}/{c.epochs}",
                            initial=min(first, images))
            if p["step_in_epoch"] == 0:
                # The epoch's summed loss and token count live in the progress, so that a
                # resumed epoch reports the same training loss as an uninterrupted one.
                p["epoch_total"] = p["epoch_count"] = 0.0
            with bar:
                for inputs, captions in batches:
                    self.optimizer.learning_rate.assign(self.learning_rate(p["epoch"], self.run_fraction()))
                    total, count = self.train_step(*self._distribute(inputs, captions))
                    total, count = float(total), float(count)
                    loss = total / max(count, 1.0)
                    if not math.isfinite(loss) or loss > 3 * initial_loss:
                        raise TrainingDiverged(
                            f"the training loss became {loss} at step {p['global_step'] + 1}; "
                            f"the last good checkpoint in {c.out} is intact. Lower --learning-rate "
                            f"(now {c.learning_rate}) or --grad-clip and --resume")
                    val = None
                    p["epoch_total"] = p.get("epoch_total", 0.0) + total
                    p["epoch_count"] = p.get("epoch_count", 0.0) + count
                    p["step_in_epoch"] += 1
                    p["global_step"] += 1
                    p["step_losses"].append(loss)
                    bar.update(int(inputs.shape[0]))
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                    if agree(stop_request.requested):
                        self.checkpoint()
                        raise stop_request.error(p["global_step"])
                    if c.max_steps and p["global_step"] >= c.max_steps:
                        stopped_by = "max_steps"
                    elif c.max_minutes and time.monotonic() - self.started >= c.max_minutes * 60:
                        stopped_by = "max_minutes"
                    if stopped_by != "epochs":
                        break
                    if p["step_in_epoch"] < steps and p["global_step"] % c.checkpoint_every == 0:
                        self.checkpoint()
            if stopped_by != "epochs" and p["step_in_epoch"] < steps:
                break
            val = self.evaluate()
            count = p.get("epoch_count", 0.0)
            train = p.get("epoch_total", 0.0) / count if count else float("nan")
            p["history"].append({"epoch": p["epoch"] + 1, "global_step": p["global_step"],
                                 "seconds": time.monotonic() - self.started, "train": train,
                                 "val": val, "val_perplexity": metrics(val)["perplexity"],
                                 "learning_rate": float(self.optimizer.learning_rate.numpy())})
            self.log(f"epoch {p['epoch'] + 1}/{c.epochs}  {format_loss('train', train)}  |  "
                     f"{format_loss('val', val)}  |  learning rate {self.optimizer.learning_rate.numpy():.2e}")
            p["epoch"] += 1
            p["step_in_epoch"] = 0
            self.checkpoint()
            if stopped_by != "epochs":
                break
        self.checkpoint()
        return stopped_by, val

    def export(self):
        """RUN_DIR/saved_model: image bytes in, caption out, loadable without this project."""
        from captioning.export import export_saved_model

        path = os.path.join(self.config.out, "saved_model")
        try:
            export_saved_model(self.model, path, overwrite=True)
        except Exception as error:
            if is_disk_full(error):
                raise export_disk_full(path, self.model.variables, f"python -m captioning.export "
                                       f"{self.config.out} {path} --overwrite") from None
            raise
        self.log(f"exported a SavedModel to {path}")

    # ---- greedy captions on validation images ----
    def validation_features(self, count):
        """Encoder features of the first `count` validation images."""
        source = self.val_source
        if source.kind == "features":
            return source.array[:count]
        if isinstance(source, ArraySource):
            pixels = source.array[:count]
        else:
            pixels = np.zeros((count, self.model.image_size, self.model.image_size, 3), np.uint8)
            for indices, batch, _ in decode_images(source.paths[:count], self.model.image_size):
                pixels[indices] = batch
        encode = tf.function(lambda x: self.model.encode(x, training=False), reduce_retracing=True, autograph=False)
        return np.concatenate([encode(pixels[i:i + 256]).numpy() for i in range(0, count, 256)])

    def score_validation(self):
        """Greedy captions of up to --eval-images validation images: correctness (shapes scenes),
        BLEU-4 and CIDEr; written with the captions to OUT/eval.json."""
        count = min(self.config.eval_images, len(self.val_set))
        records = self.val_set.records[:count]
        captions = caption_features(self.model, self.validation_features(count), self.vocabulary,
                                    self.config.max_length)
        scores = score_captions(captions, records)
        self.log(f"greedy captions on validation: {format_scores(scores)}")
        correct = ([None] * count if scores["correct"] is None else
                   [bool(x) for x in _correct_flags(captions, records)])
        document = {"scores": scores, "global_step": self.progress["global_step"],
                    "captions": [{"image_id": r.image_id, "file": os.path.basename(r.path),
                                  "caption": c, "correct": ok, "references": r.captions}
                                 for r, c, ok in zip(records, captions, correct)]}
        atomic_write_text(self.run.file("eval.json"), json.dumps(document, indent=1))
        return scores


def _correct_flags(captions, records):
    from captioning.scene_parser import caption_is_correct

    return [caption_is_correct(c, r.scene) for c, r in zip(captions, records)]


def train(config, explicit=(), log=None, progress_bar=None):
    """Trains (or resumes) the run `config.out`. Raises UsageError for bad input, before writing;
    TrainingInterrupted after SIGINT/SIGTERM, with the checkpoint written."""
    trainer = CaptionTrainer(config, explicit, log, progress_bar)
    try:
        trainer.prepare()
        return trainer.train()
    finally:
        if getattr(trainer, "run", None) is not None:
            trainer.run.unlock()
