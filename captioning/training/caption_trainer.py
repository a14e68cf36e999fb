"""Training a Captioner: tf.data batches, teacher forcing, a masked loss, checkpoints and resume.

The loop itself, the run directory, checkpoints, resume, stop conditions and the schedule are
textgen's TrainingLoop; this file holds the captioner's hooks: its data (decoded pixels, or a
frozen backbone's cached features), its train and evaluation steps, its checkpoint groups (the
model's variables and the optimizers') and, at the end, greedy captions of validation images and
the export.

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

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from captioning import config as config_lib
from captioning.coco_data import is_karpathy, read_captions, read_json
from captioning.datasets.batches import (
    CaptionSet,
    feature_source,
    hold_out,
    pixel_source,
    source_features,
)
from captioning.datasets.feature_cache import FeatureCache
from captioning.datasets.images import load_image
from captioning.datasets.tokens import build_vocabulary, check_vocabulary, tokenize
from captioning.inference.decoding import caption_features
from captioning.metrics.coco_metrics import evaluation_document, format_scores
from captioning.models.captioner import Captioner
from captioning.training.caption_progress import CaptionProgress
from captioning.training.losses import masked_cross_entropy, teacher_forcing
from captioning.training.self_critical import STATISTICS, SelfCritical, step_seed
from captioning.training.self_critical import summary as self_critical_summary
from textgen.io import atomic_write_text
from textgen.training.distribution import StreamPlacement, make_strategy
from textgen.training.loop import TrainingLoop, apply_gradients, global_mean, make_optimizer
from textgen.training.loss_units import format_loss, metrics

# Validation images shown with their captions in TensorBoard at every evaluation.
TENSORBOARD_IMAGES = 4


class CaptionTrainer(TrainingLoop):
    """The TrainingLoop hooks of a Captioner on a COCO-format caption data set."""

    config_module = config_lib
    unit = "img"
    progress_type = CaptionProgress
    export_command = "captioning.export"

    # ---- set-up ----
    def prepare_run(self):
        config, run = self.config, self.run
        # COCO files are one split each; a Karpathy file (dataset_coco.json) holds all of them:
        # training reads its "train" + "restval" images and validates on its "val" images.
        train_records = read_captions(
            config.annotations, config.images, "train", config.check_images, log=self.log
        )
        if config.val_annotations:
            val_records = read_captions(
                config.val_annotations,
                config.val_images or config.images,
                "val",
                config.check_images,
                log=self.log,
            )
        elif is_karpathy(read_json(config.annotations)):
            val_records = read_captions(
                config.annotations,
                config.val_images or config.images,
                "val",
                config.check_images,
                log=self.log,
            )
        else:
            train_records, val_records = hold_out(train_records, config.val_fraction, config.seed)
        if config.resume:
            vocabulary = run.load_vocabulary()
            check_vocabulary(vocabulary, run.vocabulary_path)
        else:
            vocabulary = build_vocabulary(
                (
                    tokenize(c)
                    for r in train_records
                    for c in r.captions[: config.first_captions or None]
                ),
                min_count=config.min_count,
            )
        self.vocabulary = vocabulary
        self.train_set = CaptionSet(
            train_records, vocabulary, config.max_length, config.first_captions
        )
        self.val_set = CaptionSet(val_records, vocabulary, config.max_length, config.first_captions)

        self.strategy = make_strategy(config.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        # Replica r gets a fixed contiguous share of every batch's rows (a short last batch
        # splits as evenly as it can; `images_per_epoch` makes sure no replica gets none).
        self.placement = StreamPlacement(
            self.strategy, config.batch_size, f"`batch_size` {config.batch_size} (the global batch)"
        )
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = Captioner.from_train_config(config, vocabulary)
            self.pretrained = self.model.encoder.pretrained
            self.decoder_vars = (
                self.model.decoder_variables()
                if self.pretrained
                else self.model.trainable_variables
            )
            self.optimizer = make_optimizer("adam", config.learning_rate)
            self.optimizer.build(self.decoder_vars)
        if self.replicas > 1:
            # Training batch statistics of the global batch, as on one device.
            for layer in self.model.encoder.batch_normalization_layers():
                layer.synchronized = True
        self.encoder_optimizer = None
        self.fine_tuning = False
        # Self-critical training (--scst-after): set up when its first epoch starts.
        self.self_critical = None
        self.scst_active = False
        self.scst_last = None  # the last step's statistics, for its metrics-log row

    def restore(self, groups):
        self.restore_variables(groups, "model", self.model.variables, "model")
        self.restore_variables(groups, "optimizer", self.optimizer.variables, "optimizer")
        if self.progress.fine_tuning:
            self._unfreeze()
            self.restore_variables(
                groups, "encoder_optimizer", self.encoder_optimizer.variables, "encoder optimizer"
            )

    def _unfreeze(self):
        self.model.encoder.set_backbone_trainable(True)
        with self.strategy.scope():
            self.encoder_optimizer = make_optimizer("adam", self.config.encoder_learning_rate)
            self.encoder_optimizer.build(self.model.encoder_variables())
        self.fine_tuning = self.progress.fine_tuning = True

    # ---- data: decode every image once; features for a frozen backbone ----
    def decoding_bar(self, total, description):
        disable = None if self.progress_bar is None else not self.progress_bar
        return tqdm(
            total=total,
            unit="img",
            desc=description,
            disable=disable,
            leave=False,
            dynamic_ncols=True,
        )

    def feature_cache(self):
        config, encoder = self.config, self.model.encoder
        root = config.feature_cache or os.path.join(config.out, "feature_cache")
        return FeatureCache(root, encoder.backbone_name, encoder.weights_key(), encoder.image_size)

    def _prepare_sources(self):
        for name in ("train", "val"):
            caption_set = getattr(self, f"{name}_set")
            what = "training" if name == "train" else "validation"
            if self.pretrained and not self.fine_tuning:
                source, kept = feature_source(
                    caption_set, self.model, self.feature_cache(), what, self.log, self.decoding_bar
                )
            else:
                source, kept = pixel_source(
                    caption_set,
                    self.model.image_size,
                    self.config.image_memory_mb,
                    what,
                    self.log,
                    self.decoding_bar,
                )
            if len(kept) < len(caption_set):
                setattr(self, f"{name}_set", caption_set.subset(kept))
            setattr(self, f"{name}_source", source)

    # ---- steps ----
    def prepare_steps(self):
        # After the restore: a run resumed while fine-tuning trains on pixels, not features.
        self._prepare_sources()
        self.compile_steps()

    def compile_steps(self):
        model, strategy, replicas = self.model, self.strategy, self.replicas
        pad = model.pad_id
        uses_pixels = self.train_source.kind == "pixels"
        groups = [(self.optimizer, self.decoder_vars)]
        if self.fine_tuning:
            groups.append((self.encoder_optimizer, model.encoder_variables()))
        clip = self.config.grad_clip

        def batch_loss(inputs, captions, training):
            # Every replica's graph must issue the same collectives in the same order; a share
            # whose batch size is statically 0 (of a short last batch) would be traced differently.
            inputs, captions = [
                tf.compat.v1.placeholder_with_default(x, [None] + x.shape[1:])
                for x in (inputs, captions)
            ]
            features = model.encode(inputs, training=training) if uses_pixels else inputs
            features = tf.repeat(features, tf.shape(captions)[1], axis=0)
            captions = tf.reshape(captions, [-1, tf.shape(captions)[2]])
            # Drop the columns that are <pad> in every caption of the batch (keeping <start> and
            # one more: under a strategy, a replica's share of a short last batch may be empty).
            length = tf.maximum(
                tf.reduce_max(tf.reduce_sum(tf.cast(captions != pad, tf.int32), axis=1)), 2
            )
            inputs, targets = teacher_forcing(captions[:, :length])
            outputs, _ = model.decode(features, inputs, training=training)
            return masked_cross_entropy(targets, model.output_layer(outputs), pad)

        def replica_step(inputs, captions):
            with tf.GradientTape() as tape:
                total, count = batch_loss(inputs, captions, True)
                loss = global_mean(total, count, replicas)
            apply_gradients(tape, loss, groups, clip, replicas)
            return total, count

        def train_step(inputs, captions):
            """(summed loss, token count) of the global batch."""
            total, count = strategy.run(replica_step, args=(inputs, captions))
            return tuple(
                strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in (total, count)
            )

        # One trace for every batch size. With one trace per size seen, a run resumed just before
        # an epoch's short last batch traces that size first, its full batches then run on the
        # general trace instead of the full-size one, and the kernels chosen for a static batch
        # size round differently: the resumed run drifts from the uninterrupted one. (Under a
        # strategy the inputs are per-replica values, which an input signature cannot name.)
        signature = self._batches(
            self.train_source,
            self.train_set,
            *self.train_set.fixed_plan(self.config.seed, self.config.captions_per_image),
        ).element_spec
        trace = dict(input_signature=signature) if replicas == 1 else dict(reduce_retracing=True)
        self.train_step = tf.function(train_step, autograph=False, **trace)
        self.eval_step = tf.function(
            lambda inputs, captions: batch_loss(inputs, captions, False),
            input_signature=signature,
            autograph=False,
        )
        if self.scst_active:
            if self.self_critical is None or self.self_critical.caption_set is not self.train_set:
                self.self_critical = SelfCritical(model, self.train_set, self.config, self.log)
            order = np.arange(len(self.train_set))
            spec = self._scst_batches(order).element_spec
            if self.config.scst_encoder == "freeze":
                groups = [(self.optimizer, model.decoder_variables())]
            self.scst_step = self.self_critical.compile(strategy, uses_pixels, groups, clip, spec)

    # ---- self-critical sequence training (captioning/training/self_critical.py) ----
    def scst_epoch(self, epoch):
        return 0 <= self.config.scst_after <= epoch

    def _scst_batches(self, order):
        """Batches of (inputs, image indices [b, 1, 1]): the reward needs every reference of an
        image, so the batch names the image instead of carrying captions."""
        indices = np.arange(len(self.train_set), dtype=np.int32)[:, None]
        return self.train_source.batches(order, order[:, None], indices, self.config.batch_size)

    def learning_rate(self, epoch, fraction=0.0):
        if self.scst_epoch(epoch):
            return self.config.scst_learning_rate
        return super().learning_rate(epoch, fraction)

    def step_metrics(self):
        if self.scst_last is None:
            return {}
        return self_critical_summary(self.scst_last, 1)

    def scst_epoch_summary(self):
        """The self-critical statistics of the epoch so far (kept in the progress, so that a
        resumed epoch reports what an uninterrupted one would)."""
        p = self.progress
        sums = p.scst_sums or [0.0] * len(STATISTICS)
        summary = self_critical_summary(sums, p.scst_steps)
        summary["scst_step_ms"] = 1000.0 * p.scst_seconds / max(1, p.scst_steps)
        return summary

    # ---- the loop's hooks ----
    def describe(self):
        c = self.config
        used = f", the first {c.first_captions} of each used" if c.first_captions else ""
        trained = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        return (
            f"vocabulary {len(self.vocabulary)} words; {len(self.train_set)} training images "
            f"({len(self.train_set.captions)} captions{used}), {len(self.val_set)} validation "
            f"images; {self.steps_per_epoch()} batches of {c.batch_size} images x "
            f"{c.captions_per_image} captions per epoch; {self.model.count_params():,} "
            f"parameters ({trained:,} trained)"
        )

    def images_per_epoch(self):
        """The training images an epoch uses: all of them, except that under several replicas a
        last batch smaller than the replica count is left out. Such a batch would leave a replica
        with no image, and synchronized batch normalisation over an empty share fails under
        TensorFlow's oneDNN CPU kernels (a collective shape mismatch). The order is reshuffled
        every epoch, so the left-out images differ from epoch to epoch."""
        total, remainder = len(self.train_set), len(self.train_set) % self.config.batch_size
        return total - remainder if 0 < remainder < self.replicas else total

    def kernel_shape(self):
        c = self.config
        return {
            **super().kernel_shape(),
            "feature_size": c.feature_size,
            "encoder": c.encoder,
            "inputs": self.train_source.kind,
            "max_length": c.max_length,
        }

    def measurement_unit(self):
        return "tok"  # training_step counts caption tokens, not images

    def measurement_batch(self):
        batch, _ = next(iter(self.batches(0, 0)))
        return batch

    def measured_variables(self):
        variables = list(self.model.variables) + list(self.optimizer.variables)
        if self.encoder_optimizer is not None:
            variables += list(self.encoder_optimizer.variables)
        return variables

    def steps_per_epoch(self):
        return -(-self.images_per_epoch() // self.config.batch_size)

    def epoch_size(self):
        return self.images_per_epoch()

    def units_done(self, step_in_epoch):
        return min(step_in_epoch * self.config.batch_size, self.images_per_epoch())

    def start_epoch(self, epoch, step_in_epoch):
        c = self.config
        if self.scst_epoch(epoch) and not self.scst_active:
            self.log(
                f"epoch {epoch + 1}: self-critical training on CIDEr-D from now on "
                f"({c.scst_samples} samples per image, {c.scst_baseline} baseline, learning "
                f"rate {c.scst_learning_rate})"
            )
            self.scst_active = True
            self.compile_steps()
        if self.pretrained and not self.fine_tuning and 0 <= c.fine_tune_after <= epoch:
            self.log(
                f"epoch {epoch + 1}: fine-tuning the {c.encoder} backbone from now on "
                f"(learning rate {c.encoder_learning_rate})"
            )
            self._unfreeze()
            self._prepare_sources()
            self.compile_steps()

    def _batches(self, source, caption_set, order, rows):
        return source.batches(order, rows, caption_set.captions, self.config.batch_size)

    def batches(self, epoch, first_step):
        c = self.config
        order, rows = self.train_set.epoch_plan(c.seed, epoch, c.captions_per_image)
        images = self.images_per_epoch()
        first = first_step * c.batch_size
        if self.scst_epoch(epoch):
            batches = self._scst_batches(order[first:images])
        else:
            batches = self._batches(
                self.train_source, self.train_set, order[first:images], rows[first:images]
            )
        for batch in batches:
            yield batch, int(batch[0].shape[0])

    def training_step(self, batch):
        inputs, captions = batch
        if self.scst_active:
            return self.self_critical_step(inputs, captions)
        total, count = self.train_step(
            self.placement.distribute(inputs), self.placement.distribute(captions)
        )
        return float(total), float(count)

    def self_critical_step(self, inputs, images):
        p = self.progress
        seed = tf.constant(step_seed(self.config.seed, p.global_step), tf.int32)
        started = time.perf_counter()
        total, count, statistics = self.scst_step(
            self.placement.distribute(inputs), self.placement.distribute(images), seed
        )
        statistics = [float(x) for x in statistics.numpy()]
        seconds = time.perf_counter() - started
        self.scst_last = statistics
        p.add_self_critical_step(statistics, seconds)
        return float(total), float(count)

    def evaluate(self):
        """Validation loss in nats per caption token (every <end> counts, no <pad> does)."""
        order, rows = self.val_set.fixed_plan(self.config.seed, self.config.captions_per_image)
        total = count = 0.0
        for inputs, captions in self._batches(self.val_source, self.val_set, order, rows):
            batch_total, batch_count = self.eval_step(inputs, captions)
            total += float(batch_total)
            count += float(batch_count)
        return total / max(count, 1.0)

    def validation_metrics(self, val):
        extra = {"val_perplexity": metrics(val)["perplexity"]}
        if self.scst_active and self.progress.scst_steps:
            extra.update(self.scst_epoch_summary())  # the epoch's self-critical steps so far
        return extra

    def after_evaluation(self, reason):
        """An epoch's self-critical summary line; the first TENSORBOARD_IMAGES validation images
        with their greedy captions, in TensorBoard (the chief only: it alone writes)."""
        if reason == "epoch" and self.scst_active and self.progress.scst_steps:
            s = self.scst_epoch_summary()
            self.log(
                f"epoch {self.progress.epoch + 1} self-critical: samples' CIDEr-D "
                f"{s['scst_sample_reward']:.3f}, greedy {s['scst_greedy_reward']:.3f}, "
                f"{s['scst_beat_baseline']:.0%} of samples beat the baseline; the reward took "
                f"{s['scst_reward_ms']:.1f} ms of {s['scst_step_ms']:.0f} ms per step"
            )
        if not self.tensorboard.write:
            return
        count = min(TENSORBOARD_IMAGES, len(self.val_set))
        records = self.val_set.records[:count]
        captions = caption_features(
            self.model, self.validation_features(count), self.vocabulary, self.config.max_length
        )
        images = [load_image(record.path, self.model.image_size) for record in records]
        step = self.progress.global_step
        self.tensorboard.images(step, "validation/captions", images, captions)

    def format_loss(self, name, nats):
        if name == "train" and self.scst_active:
            # -(r - b) log p per token: a surrogate whose gradient is REINFORCE's, not a
            # likelihood, so it has no perplexity (and is negative when samples beat the
            # baseline).
            return f"train {nats:.4f} (self-critical surrogate loss)"
        return format_loss(name, nats, level="token")

    def checkpoint_groups(self):
        groups = {"model": self.model.variables, "optimizer": self.optimizer.variables}
        if self.encoder_optimizer is not None:
            groups["encoder_optimizer"] = self.encoder_optimizer.variables
        return groups

    def finish(self):
        scores = self.score_validation() if self.config.eval_images else None
        if self.config.export:
            self.export()
        return scores

    def export_saved_model(self, path):
        from captioning.inference.saved_model import export_saved_model

        export_saved_model(self.model, path, overwrite=True)

    # ---- greedy captions on validation images ----
    def validation_features(self, count):
        """Encoder features of the first `count` validation images."""
        return source_features(self.model, self.val_source, count)

    def score_validation(self):
        """Greedy captions of up to --eval-images validation images: correctness (shapes scenes),
        BLEU-4 and CIDEr; written with the captions to OUT/eval.json."""
        count = min(self.config.eval_images, len(self.val_set))
        records = self.val_set.records[:count]
        captions = caption_features(
            self.model, self.validation_features(count), self.vocabulary, self.config.max_length
        )
        document = evaluation_document(captions, records, self.progress.global_step)
        self.log(f"greedy captions on validation: {format_scores(document['scores'])}")
        atomic_write_text(self.run.file("eval.json"), json.dumps(document, indent=1))
        return document["scores"]
