"""Self-critical sequence training (Rennie et al. 2017): REINFORCE on CIDEr-D with a baseline.

From epoch --scst-after on, every training step of `CaptionTrainer` is this one, in the graph:
1. the images are encoded: by default (--scst-encoder freeze) in inference mode, and only the
   decoder learns (noisy REINFORCE gradients into the small CNN cost visual accuracy in the
   benchmark); with --scst-encoder train as in the cross-entropy phase;
2. with the tape stopped, textgen's decode loop draws --scst-samples captions per image with a
   random sampler (temperature 1, no top-k), and beam search of width 1 decodes the greedy one;
3. `tf.numpy_function` scores all of them at once with `CiderD` against each image's
   references (every reference of the image; document frequencies of the training references,
   computed once when the phase starts);
4. loss = -sum((r(sample) - b) * log p(sample)) / (words + <end> of all the samples), with b the
   greedy caption's reward (--scst-baseline greedy) or the mean reward of the image's other
   samples (mean: "new self-critical"), and log p from one teacher-forced pass, which is the
   only differentiable part.
Under several replicas each replica samples (its own seed), decodes and scores its own share of
the batch; the loss is divided by the token count summed over the replicas, as in the
cross-entropy step, so the gradients add up. The seed of a step depends only on (--seed, global
step), so a resumed run draws the same samples as the uninterrupted one.

The step returns the summed loss and the token count (the loop's loss column is then this
surrogate loss, which can be negative) and statistics: the summed rewards of the samples and of
the greedy captions, how many samples beat their baseline, the number of samples and the
seconds spent computing the rewards.
"""

import time

import numpy as np
import tensorflow as tf

from captioning.metrics.cider_d import CiderD
from textgen.training.loop import apply_gradients, global_mean

# The statistics a step returns, summed over the replicas.
STATISTICS = ("sample_reward", "greedy_reward", "beat_baseline", "samples", "images", "seconds")


def reference_ids(caption_set, end_id, end_token=False):
    """Every image's references as token-id lists (no <start> or <pad>; <end> only with
    `end_token`, then as each reference's last word), all of them (also with
    --first-captions)."""
    rows = caption_set.captions[:, 1:]
    has_end = (rows == end_id).any(axis=1)
    ends = np.where(has_end, np.argmax(rows == end_id, axis=1), rows.shape[1])
    ends = ends + (has_end & end_token)
    offsets = caption_set.offsets
    return [
        [rows[k, : ends[k]].tolist() for k in range(offsets[i], offsets[i + 1])]
        for i in range(len(caption_set))
    ]


def step_seed(seed, global_step):
    """The sampling seed of a step: from (--seed, global step) only."""
    return int(np.random.default_rng([seed, global_step, 17]).integers(0, 1 << 30))


class SelfCritical:
    """The self-critical train step of a Captioner on `caption_set` (the training images, in the
    order of their row indices, which the SCST batches carry in place of captions)."""

    def __init__(self, model, caption_set, config, log):
        self.model = model
        self.caption_set = caption_set
        self.samples = config.scst_samples
        self.baseline = config.scst_baseline
        self.encoder = config.scst_encoder
        self.max_length = config.max_length
        started = time.perf_counter()
        # With --scst-end-token the samples' <end> (the token after their words: decoding pads
        # with it) is scored as a word, as the references' is.
        self.end_token = config.scst_end_token
        references = reference_ids(caption_set, model.end_id, self.end_token)
        self.scorer = CiderD(references)
        log(
            f"self-critical training: CIDEr-D document frequencies of {len(references)} training "
            f"images ({sum(map(len, references))} references) in "
            f"{time.perf_counter() - started:.2f} s"
        )

    def rewards(self, sample_tokens, sample_lengths, greedy_tokens, greedy_lengths, images):
        """NumPy, through tf.numpy_function: (CIDEr-D of the samples [b * K], of the greedy
        captions [b], seconds taken)."""
        started = time.perf_counter()
        images = np.asarray(images, np.int64)
        count = len(sample_tokens)
        scores = self.scorer.score(
            np.concatenate([sample_tokens, greedy_tokens]),
            np.concatenate([sample_lengths, greedy_lengths]) + int(self.end_token),
            np.concatenate([np.repeat(images, self.samples), images]),
        ).astype(np.float32)
        seconds = np.float32(time.perf_counter() - started)
        return scores[:count], scores[count:], seconds

    def replica_step(self, inputs, images, seed, uses_pixels, groups, clip, replicas):
        """One replica's step; returns (summed loss, token count, statistics [6])."""
        model, samples = self.model, self.samples
        # As in the cross-entropy step: a statically empty share would trace differently.
        inputs, images = [
            tf.compat.v1.placeholder_with_default(x, [None] + x.shape[1:]) for x in (inputs, images)
        ]
        images = tf.reshape(images, [-1])
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = seed + tf.cast(replica, tf.int32) * 7919  # each replica draws its own samples
        with tf.GradientTape() as tape:
            train_encoder = self.encoder == "train"
            features = model.encode(inputs, training=train_encoder) if uses_pixels else inputs
            with tape.stop_recording():
                frozen = tf.stop_gradient(features)
                greedy, _, greedy_lengths = model.caption_ids(frozen, self.max_length, 1)
                drawn, lengths = model.draw_ids(
                    tf.repeat(frozen, samples, axis=0), self.max_length, 1.0, 0, seed
                )
                sample_reward, greedy_reward, seconds = tf.numpy_function(
                    self.rewards,
                    [drawn, lengths, greedy, greedy_lengths, images],
                    (tf.float32, tf.float32, tf.float32),
                    stateful=False,
                )
                sample_reward = tf.ensure_shape(sample_reward, [None])
                greedy_reward = tf.ensure_shape(greedy_reward, [None])
                if self.baseline == "mean":
                    grouped = tf.reshape(sample_reward, [-1, samples])
                    others = tf.reduce_sum(grouped, axis=1, keepdims=True) - grouped
                    baseline = tf.reshape(others / (samples - 1), [-1])
                else:
                    baseline = tf.repeat(greedy_reward, samples)
                advantage = sample_reward - baseline
            log_probs = model.sequence_log_probs(
                tf.repeat(features, samples, axis=0), drawn, lengths
            )
            count = tf.cast(tf.reduce_sum(lengths + 1), tf.float32)
            total = -tf.reduce_sum(advantage * log_probs)
            loss = global_mean(total, count, replicas)
        apply_gradients(tape, loss, groups, clip, replicas)
        statistics = tf.stack(
            [
                tf.reduce_sum(sample_reward),
                tf.reduce_sum(greedy_reward),
                tf.reduce_sum(tf.cast(advantage > 0, tf.float32)),
                tf.cast(tf.size(sample_reward), tf.float32),
                tf.cast(tf.size(greedy_reward), tf.float32),
                seconds,
            ]
        )
        return total, count, statistics

    def compile(self, strategy, uses_pixels, groups, clip, signature):
        """The traced global step: (inputs, image indices [b, 1, 1], seed) -> (summed loss,
        token count, statistics [6] summed over the replicas)."""
        replicas = strategy.num_replicas_in_sync

        def replica_step(inputs, images, seed):
            return self.replica_step(inputs, images, seed, uses_pixels, groups, clip, replicas)

        def train_step(inputs, images, seed):
            outputs = strategy.run(replica_step, args=(inputs, images, seed))
            return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in outputs)

        if replicas == 1:
            spec = tuple(signature) + (tf.TensorSpec([], tf.int32),)
            return tf.function(train_step, autograph=False, input_signature=spec)
        return tf.function(train_step, autograph=False, reduce_retracing=True)


def summary(sums, steps):
    """{name: value} of statistics (STATISTICS order) summed over `steps` steps: the mean
    CIDEr-D of the samples and of the greedy captions, the share of samples that beat their
    baseline and the reward's milliseconds per step."""
    sample, greedy, beat, samples, images, seconds = (float(x) for x in sums)
    return {
        "scst_sample_reward": sample / max(samples, 1.0),
        "scst_greedy_reward": greedy / max(images, 1.0),
        "scst_beat_baseline": beat / max(samples, 1.0),
        "scst_reward_ms": 1000.0 * seconds / max(steps, 1),
    }
