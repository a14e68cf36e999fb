"""LanguageModel: token ids -> Embedding -> RecurrentStack -> Dense logits; owns encode, decode, sample."""

import keras
import numpy as np
import tensorflow as tf

from textgen.errors import UsageError
from textgen.recurrent_stack import RecurrentStack
from textgen.sampler import GreedySampler, RandomSampler, TopKSampler
from textgen.vocabulary import Vocabulary


@keras.saving.register_keras_serializable(package="textgen")
class LanguageModel(keras.Model):
    """A char-rnn style recurrent language model with explicit recurrent states.

    `model(token_ids, states)` returns `(logits, new_states)`, so the caller decides when state is
    carried (across training batches, from the prime into generation) and when it is reset
    (`initial_states`: at every epoch start, for every new sample).

    Args:
        vocabulary: the tokens, in id order (characters for char-level models).
        cell, num_layers, hidden_size, dropout, fused: see `RecurrentStack`.
        embedding_size: size of the token embedding.
        seed: seed of the dropout masks.
    """

    def __init__(self, vocabulary, cell="lstm", num_layers=2, hidden_size=256, embedding_size=64,
                 dropout=0.0, fused=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary(vocabulary)
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.embedding_size = embedding_size
        self.dropout = dropout
        self.fused = fused
        self.seed = seed
        self.embedding = keras.layers.Embedding(len(self.vocabulary), embedding_size, name="embedding")
        self.recurrent_stack = RecurrentStack(cell, num_layers, hidden_size, dropout, fused, seed,
                                              name="recurrent_stack")
        self.output_layer = keras.layers.Dense(len(self.vocabulary), name="logits")
        self._generate_fn = None

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def build(self, input_shape=None):
        self.embedding.build((None, None))
        self.recurrent_stack.build((None, None, self.embedding_size))
        self.output_layer.build((None, None, self.hidden_size))
        self.built = True

    def initial_states(self, batch_size):
        return self.recurrent_stack.initial_states(batch_size)

    def call(self, token_ids, states=None, training=False):
        x = self.embedding(token_ids)
        x, states = self.recurrent_stack(x, states, training=training)
        return self.output_layer(x), states

    def step(self, token_ids, states):
        """One generation step: token_ids [batch] -> (logits [batch, vocab], new states)."""
        x = tf.gather(self.embedding.embeddings, token_ids)
        x, states = self.recurrent_stack.step(x, states)
        return self.output_layer(x), states

    # The model owns the mapping between text and ids, so scripts never touch token ids.
    def encode(self, text):
        return np.asarray(self.vocabulary.encode(list(text)), dtype=np.int32)

    def decode(self, ids):
        return "".join(self.vocabulary.decode(ids))

    def default_prime(self):
        return "\n" if "\n" in self.vocabulary else self.vocabulary.tokens[0]

    def sample(self, prime=None, length=200, temperature=1.0, top_k=0, num_samples=1, seed=0,
               unknown="error"):
        """Generates `num_samples` texts of `length` characters, each starting with `prime`.

        The prime is fed in one call to warm up the state; every new character then costs one
        recurrent step. With no prime the text starts after a newline, which is not returned.
        """
        check_sampling_arguments(length, temperature, top_k, num_samples)
        given_prime = prime is not None and prime != ""
        if not given_prime:
            prime = self.default_prime()
        missing = self.vocabulary.unknown(list(prime))
        if missing and unknown == "skip":
            prime = "".join(ch for ch in prime if ch in self.vocabulary)
            if not prime:
                raise UsageError("every character of the prime is outside the vocabulary")
        elif missing:
            shown = " ".join(repr(ch) for ch in missing[:30])
            raise UsageError(f"the prime has {len(missing)} character(s) not in the model's "
                             f"vocabulary: {shown}; remove them or pass --unknown skip")
        if given_prime and length < len(prime):
            raise UsageError(f"--length {length} is shorter than the prime ({len(prime)} characters); "
                             f"pass --length of at least {len(prime)}")
        num_new = length - len(prime) if given_prime else length
        ids = np.tile(self.encode(prime)[None, :], (num_samples, 1))
        tokens = self._generate(ids, num_new, temperature, top_k, seed)
        texts = [self.decode(row) for row in tokens.numpy()]
        return [prime + t for t in texts] if given_prime else texts

    def _generate(self, prime_ids, num_new, temperature, top_k, seed):
        if self._generate_fn is None:
            self._generate_fn = tf.function(self._generate_graph, reduce_retracing=True)
        return self._generate_fn(tf.constant(prime_ids, tf.int32), tf.constant(num_new, tf.int32),
                                 tf.constant(float(temperature)), tf.constant(int(top_k)),
                                 tf.constant(int(seed)))

    def _generate_graph(self, prime_ids, num_new, temperature, top_k, seed):
        states = self.initial_states(tf.shape(prime_ids)[0])
        _, states = self(prime_ids[:, :-1], states)
        seed_pair = tf.stack([seed, 0])

        def run(sampler):
            return sampler(self.step, prime_ids[:, -1], states, num_new, seed_pair)[0]

        # The sampler is chosen in the graph so one traced function serves every setting.
        return tf.case([(tf.equal(temperature, 0.0), lambda: run(GreedySampler())),
                        (top_k > 0, lambda: run(TopKSampler(top_k, temperature)))],
                       default=lambda: run(RandomSampler(temperature)))

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=self.vocabulary.tokens, cell=self.cell, num_layers=self.num_layers,
                      hidden_size=self.hidden_size, embedding_size=self.embedding_size,
                      dropout=self.dropout, fused=self.fused, seed=self.seed)
        return config


def check_sampling_arguments(length, temperature, top_k, num_samples):
    if length <= 0:
        raise UsageError(f"--length must be a positive number of characters, got {length}")
    if temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (0 means argmax), got {temperature}")
    if top_k < 0:
        raise UsageError(f"--top-k must be >= 0 (0 means no cut), got {top_k}")
    if num_samples <= 0:
        raise UsageError(f"--num-samples must be positive, got {num_samples}")
