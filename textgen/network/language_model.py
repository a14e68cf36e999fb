"""LanguageModel: token ids -> Embedding -> RecurrentStack -> Dense logits.

The model owns encode, decode and sample, and its own building and loading (`from_train_config`,
`from_run_directory`), so that training, sampling and export build a run's model the same way and
no script has to import the trainer to load one.
"""

import keras
import numpy as np
import tensorflow as tf

from textgen import config as config_lib
from textgen.corpus.tokenizers import make_tokenizer
from textgen.corpus.vocabulary import END_OF_DOCUMENT, Vocabulary
from textgen.errors import UsageError
from textgen.network.recurrent_stack import RecurrentStack
from textgen.training.run_directory import RunDirectory, assign_variables


@keras.saving.register_keras_serializable(package="textgen")
class LanguageModel(keras.Model):
    """A char-rnn style recurrent language model with explicit recurrent states.

    `model(token_ids, states)` returns `(logits, new_states)`, so the caller decides when state is
    carried (across training batches, from the prime into generation) and when it is reset
    (`initial_states`: at every epoch start, for every new sample).

    Args:
        vocabulary: the tokens, in id order (characters for char-level models).
        unknown_token: the token that stands for out-of-vocabulary tokens (`<unk>`), if any.
        level: "char" or "word".
        segmenter: for word level, "regex", "jieba" or "whitespace" (see textgen.corpus.tokenizers).
        cell, num_layers, hidden_size, dropout, fused: see `RecurrentStack`.
        embedding_size: size of the token embedding.
        seed: seed of the dropout masks.
    """

    def __init__(
        self,
        vocabulary,
        cell="lstm",
        num_layers=2,
        hidden_size=256,
        embedding_size=64,
        dropout=0.0,
        fused=None,
        seed=None,
        unknown_token=None,
        level="char",
        segmenter=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(vocabulary, Vocabulary):
            unknown_token = vocabulary.unknown_token
            vocabulary = vocabulary.tokens
        self.vocabulary = Vocabulary(vocabulary, unknown_token=unknown_token)
        self.unknown_token = unknown_token
        self.level = level
        self.segmenter = segmenter
        self.tokenizer = make_tokenizer(level, segmenter or "regex")
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.embedding_size = embedding_size
        self.dropout = dropout
        self.fused = fused
        self.seed = seed
        self.embedding = keras.layers.Embedding(
            len(self.vocabulary), embedding_size, name="embedding"
        )
        self.recurrent_stack = RecurrentStack(
            cell, num_layers, hidden_size, dropout, fused, seed, name="recurrent_stack"
        )
        self.output_layer = keras.layers.Dense(len(self.vocabulary), name="logits")
        self._generate_fn = None
        self._log_probs_fn = None
        self._streaming = (
            None  # a textgen.generation.streaming_generator.StreamingGenerator, made on use
        )

    # ---- building and loading, beside the model (nanoGPT's `from_pretrained`) ----------------
    @classmethod
    def from_train_config(cls, config, vocabulary):
        """The built, untrained model that the TrainConfig `config` describes."""
        fused = {"auto": None, "on": True, "off": False}[config.fused]
        model = cls(
            vocabulary,
            cell=config.cell,
            num_layers=config.num_layers,
            hidden_size=config.hidden_size,
            embedding_size=config.embedding_size,
            dropout=config.dropout,
            fused=fused,
            seed=config.seed,
            level=config.level,
            segmenter=None if config.level == "char" else config.segmenter,
        )
        model.build()
        return model

    @classmethod
    def from_run_directory(cls, path, weights="best"):
        """The trained model of a `textgen.train` run directory: built from its config.json and
        vocab.json, with the weights of its best evaluation (checkpoint.best.npz) when it has
        one and `weights` is "best", else of its latest checkpoint ("latest"). The run's
        TrainConfig is kept as `model.train_config`. A missing or damaged file is a UsageError
        naming it."""
        if weights not in ("best", "latest"):
            raise UsageError(f"`weights` must be best or latest, got {weights!r}")
        run = RunDirectory(path)
        run.require_checkpoint()
        config = config_lib.from_dict(run.load_config(config_lib.TrainConfig))
        model = cls.from_train_config(config, run.load_vocabulary())
        groups, _ = run.load_checkpoint(weights)
        assign_variables(model.variables, groups.get("model", []), "model")
        model.train_config = config
        return model

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
        # The stack embeds the ids itself, so that the lean LSTM kernel can fold the embedding
        # into the first layer's input projection (RecurrentStack.call).
        x, states = self.recurrent_stack(
            token_ids, states, training=training, embeddings=self.embedding.embeddings
        )
        return self.output_layer(x), states

    def step(self, token_ids, states):
        """One generation step: token_ids [batch] -> (logits [batch, vocab], new states)."""
        x = tf.gather(self.embedding.embeddings, token_ids)
        x, states = self.recurrent_stack.step(x, states)
        return self.output_layer(x), states

    # The model owns the mapping between text and ids, so scripts never touch token ids.
    @property
    def unit(self):
        return "character" if self.level == "char" else "token"

    def tokenize(self, text):
        return self.tokenizer.tokenize(text)

    def encode(self, text):
        return np.asarray(self.vocabulary.encode(self.tokenize(text)), dtype=np.int32)

    def decode(self, ids):
        return self.tokenizer.detokenize(self.vocabulary.decode(ids))

    def default_prime(self):
        if "\n" in self.vocabulary:
            return "\n"
        return next(t for t in self.vocabulary.tokens if t != self.unknown_token)

    def end_of_document_id(self, parameter):
        """The id of the end-of-document token, which a model trained on several documents
        has; UsageError naming `parameter` (what needs it) for one trained on one text."""
        if END_OF_DOCUMENT not in self.vocabulary:
            raise UsageError(
                f"`{parameter}` needs a model trained on several documents, whose vocabulary "
                "holds the end-of-document token; this one was trained on one text (train on a "
                "folder: python -m textgen.train --data FOLDER)"
            )
        return self.vocabulary.id(END_OF_DOCUMENT)

    def forbidden_tokens(self, allow_unknown=False):
        """Bool mask of tokens sampling must never emit: `<unk>` unless allowed."""
        mask = np.zeros(len(self.vocabulary), dtype=bool)
        if self.unknown_token is not None and not allow_unknown:
            mask[self.vocabulary.id(self.unknown_token)] = True
        return mask

    def sample(
        self,
        prime=None,
        length=200,
        temperature=1.0,
        top_k=0,
        num_samples=1,
        seed=0,
        unknown="error",
        allow_unknown=False,
        until_end=False,
    ):
        """Generates `num_samples` texts of `length` tokens (characters at char level), each
        starting with `prime`.

        The prime is fed in one call to warm up the state; every new token then costs one
        recurrent step. With no prime the text starts after a newline, which is not returned.
        With `until_end`, each text stops at the end-of-document token (not returned), or at
        `length`; the model must have been trained on several documents.
        """
        check_sampling_arguments(length, temperature, top_k, num_samples)
        end = self.end_of_document_id("until_end") if until_end else None
        prime_ids, given_prime = self.prime_ids(prime, length, unknown)
        num_new = length - len(prime_ids) if given_prime else length
        ids = np.tile(prime_ids[None, :], (num_samples, 1))
        tokens = self._generate(
            ids, num_new, temperature, top_k, seed, self.forbidden_tokens(allow_unknown), end
        )
        start = ids if given_prime else ids[:, :0]
        if end is None:
            return [self.decode(row) for row in np.concatenate([start, tokens.numpy()], axis=1)]
        return [
            self.decode(np.concatenate([head, before_end(row, end)]))
            for head, row in zip(start, tokens.numpy())
        ]

    def sample_documents(
        self,
        num_documents=1,
        prime=None,
        length=200,
        temperature=1.0,
        top_k=0,
        seed=0,
        unknown="error",
        allow_unknown=False,
    ):
        """Generates `num_documents` whole documents, together as one batch: each starts after
        the end-of-document token (as every document but the first did in training), with
        `prime` when one is given, and stops at the next end token (not returned) or at
        `length` tokens, the prime included. The model must have been trained on several
        documents. The SavedModel's `generate_document` gives the same texts."""
        check_sampling_arguments(length, temperature, top_k, 1)
        if num_documents <= 0:
            raise UsageError(f"`documents` must be a positive number, got {num_documents}")
        end = self.end_of_document_id("documents")
        prime_ids, given_prime = self.prime_ids(prime, length, unknown)
        head = prime_ids if given_prime else prime_ids[:0]
        ids = np.tile(np.concatenate([[end], head]).astype(np.int32)[None, :], (num_documents, 1))
        tokens = self._generate(
            ids,
            length - len(head),
            temperature,
            top_k,
            seed,
            self.forbidden_tokens(allow_unknown),
            end,
        )
        return [self.decode(np.concatenate([head, before_end(row, end)])) for row in tokens.numpy()]

    def prime_ids(self, prime, length, unknown="error"):
        """(ids [T] int32, given): the ids `sample` feeds for `prime`, and whether a prime was
        given (without one, the default prime, which is not part of the text). UsageError for
        prime tokens outside the vocabulary (unless `unknown` is "skip") and for a `length`
        shorter than the prime."""
        given_prime = prime is not None and prime != ""
        prime_tokens = self.tokenize(prime) if given_prime else [self.default_prime()]
        if self.unknown_token is None:
            missing = self.vocabulary.unknown(prime_tokens)
            if missing and unknown == "skip":
                prime_tokens = [t for t in prime_tokens if t in self.vocabulary]
                if not prime_tokens:
                    raise UsageError(f"every {self.unit} of the prime is outside the vocabulary")
            elif missing:
                shown = " ".join(repr(t) for t in missing[:30])
                raise UsageError(
                    f"the prime has {len(missing)} {self.unit}(s) not in the model's "
                    f"vocabulary: {shown}; remove them or pass `unknown` skip"
                )
        if given_prime and length < len(prime_tokens):
            raise UsageError(
                f"`length` {length} is shorter than the prime ({len(prime_tokens)} "
                f"{self.unit}s); pass `length` of at least {len(prime_tokens)}"
            )
        return np.asarray(self.vocabulary.encode(prime_tokens), np.int32), given_prime

    def stream(
        self,
        prime=None,
        length=200,
        temperature=1.0,
        top_k=0,
        seed=0,
        unknown="error",
        allow_unknown=False,
        until_end=False,
    ):
        """Yields `sample(...)[0]` (one sample, the same arguments) piece by piece as it is
        generated: the prime at once, then the text of each compiled block of 64 tokens as soon
        as XLA has run it. The pieces join to exactly the text `sample` returns; with
        `until_end` it stops at the end-of-document token."""
        from textgen.generation.streaming_generator import StreamingGenerator

        check_sampling_arguments(length, temperature, top_k, 1)
        end = self.end_of_document_id("until_end") if until_end else None
        prime_ids, given_prime = self.prime_ids(prime, length, unknown)
        if self._streaming is None:
            self._streaming = StreamingGenerator(self)
        blocks = self._streaming.generate(
            prime_ids[None, :],
            length - len(prime_ids) if given_prime else length,
            temperature,
            top_k,
            seed,
            self.forbidden_tokens(allow_unknown),
        )
        ids = list(prime_ids) if given_prime else []
        shown = ""
        if ids:
            shown = self.decode(ids)
            yield shown
        for block in blocks:
            row = block[0] if end is None else before_end(block[0], end)
            ids.extend(row)
            if len(row) < len(block[0]):
                break  # the end token: the document is done
            # Word-level detokenising joins a token to the next one, so only the text up to the
            # last token is final.
            text = self.decode(ids if self.level == "char" else ids[:-1])
            if len(text) > len(shown) and text.startswith(shown):
                yield text[len(shown) :]
                shown = text
        text = self.decode(ids)
        if text.startswith(shown) and len(text) > len(shown):
            yield text[len(shown) :]

    # ---- scoring: how likely a text is (textgen.generation.log_probability lays out texts and
    # streams) ----
    def token_log_probs(self, input_ids, target_ids, states):
        """log p(target_ids[:, t] | input_ids[:, :t + 1]) for [B, T] ids, from `states`: the
        training forward pass (one sequence call, dropout off). Returns (log-probabilities
        [B, T] float32, the new states), so long texts can be scored in pieces."""
        if self._log_probs_fn is None:

            def log_probs(input_ids, target_ids, states):
                logits, states = self(input_ids, states, training=False)
                nats = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    target_ids, tf.cast(logits, tf.float32)
                )
                return -nats, states

            self._log_probs_fn = tf.function(log_probs, reduce_retracing=True)
        return self._log_probs_fn(
            tf.constant(input_ids, tf.int32), tf.constant(target_ids, tf.int32), list(states)
        )

    def score(self, text, prime=None, unknown="error", streams=1):
        """How likely `text` is: a dict with log_prob (nats), tokens, characters, nats_per_token,
        bits_per_char, perplexity, unknown_tokens (`<unk>`), skipped (characters dropped by
        `unknown="skip"`) and streams. The state runs through the whole text from zero state
        after `prime` (default: the default prime, as in `sample`); `streams` > 1 scores it
        as that many contiguous pieces in one batch, each from zero state
        (textgen.generation.log_probability)."""
        from textgen.generation import log_probability

        return log_probability.score_text(self, text, prime, unknown, streams)

    def score_each(self, texts, prime=None, unknown="error", batch_size=64):
        """`score` of each of `texts` on its own (from zero state after `prime`), `batch_size`
        of them per batch; a list of dicts, in order."""
        from textgen.generation import log_probability

        return log_probability.score_texts(self, texts, prime, unknown, batch_size)

    def _generate(self, prime_ids, num_new, temperature, top_k, seed, forbidden, end_token=None):
        """Runs the generation-time model (`textgen.network.lean_language_model`) on weights folded
        from the
        current ones, which is what the exported SavedModel runs too: the same prime, seed and
        settings give the same text here and from a SavedModel exported on this machine (both
        take the loop `textgen.generation.loop_choice` measured for this machine and batch size).
        The weights are arguments of one traced function, so sampling during training does not
        retrace. With `end_token` (an id) every row stops at it (`generate_ids`)."""
        from textgen.generation import loop_choice
        from textgen.network.lean_language_model import LeanLanguageModel, lean_weights

        if self._generate_fn is None:

            def generate(
                weights, limit, prime_ids, num_new, temperature, top_k, seed, forbidden, end=None
            ):
                lean = LeanLanguageModel(
                    weights, self.cell, self.num_layers, self.hidden_size, xla_max_streams=limit
                )
                return lean.generate_ids(
                    prime_ids, num_new, temperature, top_k, seed, forbidden, end
                )

            self._generate_fn = tf.function(generate, reduce_retracing=True)
            self._xla_max_streams = loop_choice.xla_max_streams(self)
        weights = {name: tf.constant(value) for name, value in lean_weights(self).items()}
        return self._generate_fn(
            weights,
            loop_choice.as_tensor(self._xla_max_streams),
            tf.constant(prime_ids, tf.int32),
            tf.constant(num_new, tf.int32),
            tf.constant(float(temperature)),
            tf.constant(int(top_k)),
            tf.constant(int(seed)),
            tf.constant(forbidden),
            None if end_token is None else int(end_token),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=self.vocabulary.tokens,
            cell=self.cell,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            embedding_size=self.embedding_size,
            dropout=self.dropout,
            fused=self.fused,
            seed=self.seed,
            unknown_token=self.unknown_token,
            level=self.level,
            segmenter=self.segmenter,
        )
        return config


def before_end(ids, end):
    """The ids of a generated row up to its first `end` (a numpy array)."""
    hits = np.flatnonzero(np.asarray(ids) == end)
    return ids[: hits[0]] if len(hits) else ids


def check_sampling_arguments(length, temperature, top_k, num_samples):
    if length <= 0:
        raise UsageError(
            f"`length` must be a positive number of characters (tokens at word level), got {length}"
        )
    if temperature < 0:
        raise UsageError(f"`temperature` must be >= 0 (0 means argmax), got {temperature}")
    if top_k < 0:
        raise UsageError(f"`top_k` must be >= 0 (0 means no cut), got {top_k}")
    if num_samples <= 0:
        raise UsageError(f"`num_samples` must be positive, got {num_samples}")
