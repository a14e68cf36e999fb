"""StreamingGenerator: `LanguageModel.sample` one compiled block at a time, for text that shows
as it is generated (`textgen.sample --stream`, `--interactive`)."""

import numpy as np
import tensorflow as tf

from textgen.generation.decode_loop import compiled_decode_blocks, compiled_steps
from textgen.generation.samplers import make_sampler
from textgen.network.lean_language_model import LeanLanguageModel, lean_weights


class StreamingGenerator:
    """The generation-time model of `LanguageModel.sample` (`textgen.network.lean_language_model`,
    the loop
    `compiled_decode_loop` compiles), run from Python block by block.

    It is kept between calls, so that a prompt loop compiles each sampler once: the lean weights
    live in variables that every call refreshes from the model (a Keras model that trains on
    still streams its current weights without a retrace), and the compiled blocks are kept per
    (temperature, top-k, forbidden tokens). The tokens equal `sample`'s for the same prime and
    seed, because the blocks are the ones its loop runs, with the same seeds per step.

    Args:
        model: a textgen LanguageModel.
    """

    def __init__(self, model):
        self.model = model
        self.weights = None
        self.lean = None
        self.blocks = {}
        self.prime = None

    def refresh(self):
        values = lean_weights(self.model)
        if self.weights is None:
            self.weights = {
                name: tf.Variable(value, trainable=False, name=name)
                for name, value in values.items()
            }
            model = self.model
            self.lean = LeanLanguageModel(
                self.weights,
                model.cell,
                model.num_layers,
                model.hidden_size,
                end_of_document=model.lean_end_of_document(),
            )
            self.prime = tf.function(
                lambda ids, labels: self.lean.prime(
                    ids, self.lean.initial_states(tf.shape(ids)[0], labels)
                ),
                input_signature=[
                    tf.TensorSpec([None, None], tf.int32),
                    tf.TensorSpec([None], tf.int32),
                ],
            )
        else:
            for name, value in values.items():
                self.weights[name].assign(value)

    def block_function(self, temperature, top_k, forbidden):
        key = (float(temperature), int(top_k), forbidden.tobytes())
        if key not in self.blocks:
            self.blocks[key] = compiled_steps(
                self.lean.step,
                make_sampler(temperature, top_k),
                tf.constant(forbidden),  # as `sample` passes it, even when all False
            )
        return self.blocks[key]

    def generate(self, prime_ids, num_new, temperature, top_k, seed, forbidden, labels=None):
        """Yields the new token ids after `prime_ids` [B, T] (T >= 1) as numpy [B, k] blocks,
        as `LeanLanguageModel.generate_ids` makes them: prime with all but the last token, then
        sample from the last one, step t drawing with the seed (seed, t). `labels` [B]: the
        label ids of a conditioned model."""
        self.refresh()
        prime_ids = np.asarray(prime_ids, np.int32)
        if labels is None:
            labels = np.zeros(len(prime_ids), np.int32)
        labels = tf.constant(labels, tf.int32)
        if prime_ids.shape[1] > 1:
            states = self.prime(tf.constant(prime_ids[:, :-1]), labels)
        else:  # what `prime` returns for no tokens, without the second its tracing takes
            states = self.lean.initial_states(prime_ids.shape[0], labels)
        some_steps = self.block_function(temperature, top_k, np.asarray(forbidden, bool))
        yield from compiled_decode_blocks(
            some_steps, prime_ids[:, -1], states, num_new, tf.constant([int(seed), 0], tf.int32)
        )
