"""The caption loss: cross-entropy over real tokens only; <pad> positions count for nothing."""

import tensorflow as tf


def masked_cross_entropy(targets, logits, pad_id=0):
    """(summed -log p(target) over positions whose target is not <pad>, how many there are).

    Summing, not averaging, lets a caller add batches up and divide once, so a validation loss
    is the exact mean over all its tokens whatever the batch composition.
    """
    targets = tf.cast(targets, tf.int32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))
    mask = tf.cast(tf.not_equal(targets, pad_id), tf.float32)
    return tf.reduce_sum(losses * mask), tf.reduce_sum(mask)


def masked_loss(targets, logits, pad_id=0):
    """Mean cross-entropy per real (non-<pad>) target token, in nats."""
    total, count = masked_cross_entropy(targets, logits, pad_id)
    return total / tf.maximum(count, 1.0)


def teacher_forcing(captions):
    """Encoded captions [B, L] (<start> ... <end> <pad>...) -> (inputs [B, L-1], targets [B, L-1]):
    position t reads token t and predicts token t+1."""
    return captions[:, :-1], captions[:, 1:]
