"""LanguageModel: token ids -> Embedding -> RecurrentStack -> Dense logits.

The model owns encode, decode and sample, and its own building and loading (`from_train_config`,
`from_run_directory`), so that training, sampling and export build a run's model the same way and
no script has to import the trainer to load one.

A conditioned model (`labels`, `textgen.train --labels`) also has a label embedding: the label
v of each document enters the first layer's gates through Wih, the projection the captioner
feeds its image through (`textgen.network.conditioning`). Its input ids are joint ids,
label * vocabulary_size + token (`joint_ids`), so that training's batches, the kernels and the
scoring code carry the label with each token.
"""

import keras
import numpy as np
import tensorflow as tf

from textgen import config as config_lib
from textgen.corpus.documents import NO_LABEL
from textgen.corpus.tokenizers import make_tokenizer
from textgen.corpus.vocabulary import END_OF_DOCUMENT, Vocabulary
from textgen.errors import UsageError
from textgen.network import conditioning
from textgen.network.precision import matmul
from textgen.network.precision import resolve as resolve_precision
from textgen.network.recurrent_stack import RecurrentStack
from textgen.training.run_directory import RunDirectory, assign_variables

# classify's prior over labels: the training documents' label frequencies, or uniform.
PRIORS = ("training", "uniform")


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
        labels: for a conditioned model, the label names (NO_LABEL, "<none>", first); the
            vocabulary must hold the end-of-document token.
        label_embedding_size: size of the label embedding v.
        label_injection: "every-step" (Wih v enters every step) or "document-start" (only
            the steps that feed the end-of-document token, where the next document starts).
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
        labels=None,
        label_embedding_size=16,
        label_injection="every-step",
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
        self.labels = list(labels) if labels else None
        self.label_embedding_size = label_embedding_size
        self.label_injection = label_injection
        if self.labels:
            if self.labels[0] != NO_LABEL or len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels must be distinct, {NO_LABEL} first; got {labels}")
            self.end_of_document_id("labels")
            self.label_embedding = keras.layers.Embedding(
                len(self.labels), label_embedding_size, name="label_embedding"
            )
        # The training documents of each label but <none>: classify's prior (a run's
        # label_counts.json; None, a uniform prior, for a model built in code or an older run).
        self.label_counts = None
        self._generate_fn = None
        self._xla_max_streams = {}  # precision -> loop_choice's answer for this model
        # The generation loop's matmul precision (`textgen.network.precision`: auto, float32 or
        # bfloat16; the graph loop only, see LeanLanguageModel). Set by textgen.sample
        # --precision; like the kernels, a property of the machine, not saved with the model.
        self.generation_precision = "auto"
        self._log_probs_fn = None
        self._streaming = (
            None  # a textgen.generation.streaming_generator.StreamingGenerator, made on use
        )

    # ---- building and loading, beside the model (nanoGPT's `from_pretrained`) ----------------
    @classmethod
    def from_train_config(cls, config, vocabulary, labels=None):
        """The built, untrained model that the TrainConfig `config` describes (conditioned on
        `labels`, the label names, when its --labels is set)."""
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
            labels=labels if getattr(config, "labels", "") else None,
            label_embedding_size=getattr(config, "label_embedding_size", 16),
            label_injection=getattr(config, "label_injection", "every-step"),
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
        labels = run.load_labels() if config.labels else None
        model = cls.from_train_config(config, run.load_vocabulary(), labels)
        if labels:
            model.label_counts = run.load_label_counts(labels)
        groups, _ = run.load_checkpoint(weights)
        assign_variables(model.variables, groups.get("model", []), "model")
        model.train_config = config
        return model

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    @property
    def conditioning_size(self):
        return self.label_embedding_size if self.labels else 0

    def build(self, input_shape=None):
        self.embedding.build((None, None))
        self.recurrent_stack.build((None, None, self.embedding_size + self.conditioning_size))
        self.output_layer.build((None, None, self.hidden_size))
        if self.labels:
            self.label_embedding.build((None,))
        self.built = True

    def initial_states(self, batch_size):
        return self.recurrent_stack.initial_states(batch_size)

    def call(self, token_ids, states=None, training=False):
        """token ids [B, T] (joint ids for a conditioned model) -> (logits, new states)."""
        if self.labels:
            return self.conditioned_call(token_ids, states, training)
        # The stack embeds the ids itself, so that the lean LSTM kernel can fold the embedding
        # into the first layer's input projection (RecurrentStack.call).
        x, states = self.recurrent_stack(
            token_ids, states, training=training, embeddings=self.embedding.embeddings
        )
        return self.logits(x), states

    def logits(self, x):
        """The output layer on recurrent outputs x [..., hidden_size], its matmul in the stack's
        precision (`textgen.network.precision`); the logits are float32 either way."""
        precision = self.recurrent_stack.precision
        if precision == "float32":
            return self.output_layer(x)
        layer = self.output_layer
        flat = tf.reshape(x, [-1, self.hidden_size])
        logits = tf.nn.bias_add(matmul(flat, layer.kernel, precision), layer.bias)
        return tf.reshape(logits, tf.concat([tf.shape(x)[:-1], [-1]], 0))

    def conditioned_call(self, joint, states, training):
        tokens, labels = self.split_joint_ids(joint)
        acts = self.label_acts(tokens)
        vocabulary, groups = self.vocabulary_size, len(self.labels) + 1
        count = joint.shape.num_elements()
        if count is not None and groups * vocabulary < count:
            # One joint table row per (label, token) and a last group of zero labels for the
            # steps where the label does not act: the stack's table lookup (the C++ LSTM ops)
            # then runs a conditioned model as fast as a plain one.
            label_rows = tf.concat(
                [self.label_embedding.embeddings, tf.zeros([1, self.label_embedding_size])], 0
            )
            table = tf.concat(
                [
                    tf.tile(self.embedding.embeddings, [groups, 1]),
                    tf.repeat(label_rows, vocabulary, axis=0),
                ],
                axis=1,
            )
            ids = tf.where(acts, labels, groups - 1) * vocabulary + tokens
            x, states = self.recurrent_stack(ids, states, training=training, embeddings=table)
        else:
            inputs = conditioning.conditioned_inputs(
                tf.gather(self.embedding.embeddings, tokens),
                tf.gather(self.label_embedding.embeddings, labels),
                acts,
            )
            x, states = self.recurrent_stack(inputs, states, training=training)
        return self.logits(x), states

    def step(self, token_ids, states, labels=None):
        """One generation step: token_ids [batch] -> (logits [batch, vocab], new states);
        `labels` [batch] are the label ids of a conditioned model (None: <none>)."""
        x = tf.gather(self.embedding.embeddings, token_ids)
        if self.labels:
            labels = tf.zeros_like(token_ids) if labels is None else labels
            x = conditioning.conditioned_inputs(
                x[:, None],
                tf.gather(self.label_embedding.embeddings, labels),
                self.label_acts(token_ids)[:, None],
            )[:, 0]
        x, states = self.recurrent_stack.step(x, states)
        return self.output_layer(x), states

    # ---- labels ----
    def label_acts(self, token_ids):
        """Where Wih v enters (m_t, bool like token_ids): every step, or the steps that feed
        the end-of-document token (--label-injection document-start)."""
        if self.label_injection == "document-start":
            return tf.equal(token_ids, self.end_of_document_id("labels"))
        return tf.ones_like(token_ids, tf.bool)

    def joint_ids(self, token_ids, label_ids):
        """label * vocabulary_size + token: a conditioned model's input ids (numpy or tf)."""
        return label_ids * self.vocabulary_size + token_ids

    def split_joint_ids(self, joint):
        return joint % self.vocabulary_size, joint // self.vocabulary_size

    def label_ids(self, label, count=1):
        """int32 [count] label ids for `label`: one name (or None: <none>) for every row, or a
        list of `count` names. UsageError for a model without labels given one, and for a name
        the model does not know (naming those it knows)."""
        names = [label] * count if label is None or isinstance(label, str) else list(label)
        if not self.labels:
            if any(name not in (None, "", NO_LABEL) for name in names):
                raise UsageError(
                    "`label` needs a conditioned model, and this one was trained without "
                    "labels (train with `labels` folder or jsonl)"
                )
            return None
        index = {name: i for i, name in enumerate(self.labels)}
        unknown = [name for name in names if name not in (None, "") and name not in index]
        if unknown:
            raise UsageError(
                f"unknown `label` {unknown[0]!r}; this model knows "
                f"{', '.join(self.labels[1:])} (or {NO_LABEL})"
            )
        return np.array([index.get(name or NO_LABEL) for name in names], np.int32)

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

    def generation_start(self, prime, length, unknown, end_token=None):
        """(the ids generation is primed with, `head`: the prime ids returned with the text,
        the number of new tokens for `length` in all). With `end_token` the text is a new
        document: the end-of-document token first, then the prime."""
        prime_ids, given_prime = self.prime_ids(prime, length, unknown)
        head = prime_ids if given_prime else prime_ids[:0]
        if end_token is not None:
            prime_ids = np.concatenate([[end_token], head]).astype(np.int32)
        return prime_ids, head, length - len(head)

    def label_document_start(self, labels):
        """The end-of-document token a labelled sample starts after (each is a new document of
        its label), or None without labels."""
        return None if labels is None else self.end_of_document_id("labels")

    def default_prime(self):
        """What generation and scoring start after: for a conditioned model the end-of-document
        token (a new document, of the label asked for), else a newline where there is one."""
        if self.labels:
            return END_OF_DOCUMENT
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
        label=None,
    ):
        """Generates `num_samples` texts of `length` tokens (characters at char level), each
        starting with `prime`.

        The prime is fed in one call to warm up the state; every new token then costs one
        recurrent step. With no prime the text starts after a newline, which is not returned.
        With `until_end`, each text stops at the end-of-document token (not returned), or at
        `length`; the model must have been trained on several documents.

        A conditioned model generates under `label` (a name, or a list of one per sample;
        None: <none>), each text a new document of it: after the end-of-document token, then
        the prime.
        """
        check_sampling_arguments(length, temperature, top_k, num_samples)
        end = self.end_of_document_id("until_end") if until_end else None
        labels = self.label_ids(label, num_samples)
        if labels is not None and not isinstance(label, (str, type(None))):
            num_samples = len(labels)
        prime_ids, head, num_new = self.generation_start(
            prime, length, unknown, self.label_document_start(labels)
        )
        ids = np.tile(prime_ids[None, :], (num_samples, 1))
        tokens = self._generate(
            ids,
            num_new,
            temperature,
            top_k,
            seed,
            self.forbidden_tokens(allow_unknown),
            end,
            labels,
        )
        start = np.tile(head[None, :], (num_samples, 1))
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
        label=None,
    ):
        """Generates `num_documents` whole documents, together as one batch: each starts after
        the end-of-document token (as every document but the first did in training), with
        `prime` when one is given, and stops at the next end token (not returned) or at
        `length` tokens, the prime included. The model must have been trained on several
        documents. The SavedModel's `generate_document` gives the same texts. A conditioned
        model writes documents of `label` (a name; None: <none>)."""
        check_sampling_arguments(length, temperature, top_k, 1)
        if num_documents <= 0:
            raise UsageError(f"`documents` must be a positive number, got {num_documents}")
        end = self.end_of_document_id("documents")
        labels = self.label_ids(label, num_documents)
        prime_ids, head, num_new = self.generation_start(prime, length, unknown, end)
        ids = np.tile(prime_ids[None, :], (num_documents, 1))
        tokens = self._generate(
            ids,
            num_new,
            temperature,
            top_k,
            seed,
            self.forbidden_tokens(allow_unknown),
            end,
            labels,
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
        label=None,
    ):
        """Yields `sample(...)[0]` (one sample, the same arguments) piece by piece as it is
        generated: the prime at once, then the text of each compiled block of 64 tokens as soon
        as XLA has run it. The pieces join to exactly the text `sample` returns; with
        `until_end` it stops at the end-of-document token."""
        from textgen.generation.streaming_generator import StreamingGenerator

        check_sampling_arguments(length, temperature, top_k, 1)
        end = self.end_of_document_id("until_end") if until_end else None
        labels = self.label_ids(label, 1)
        prime_ids, head, num_new = self.generation_start(
            prime, length, unknown, self.label_document_start(labels)
        )
        if self._streaming is None:
            self._streaming = StreamingGenerator(self)
        blocks = self._streaming.generate(
            prime_ids[None, :],
            num_new,
            temperature,
            top_k,
            seed,
            self.forbidden_tokens(allow_unknown),
            labels,
        )
        ids = list(head)
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

    def score(self, text, prime=None, unknown="error", streams=1, label=None):
        """How likely `text` is: a dict with log_prob (nats), tokens, characters, nats_per_token,
        bits_per_char, perplexity, unknown_tokens (`<unk>`), skipped (characters dropped by
        `unknown="skip"`) and streams. The state runs through the whole text from zero state
        after `prime` (default: the default prime, as in `sample`); `streams` > 1 scores it
        as that many contiguous pieces in one batch, each from zero state
        (textgen.generation.log_probability). A conditioned model scores it under `label`
        (None: <none>)."""
        from textgen.generation import log_probability

        return log_probability.score_text(
            self, text, prime, unknown, streams, labels=self.label_ids(label, 1)
        )

    def score_each(
        self, texts, prime=None, unknown="error", batch_size=64, documents=False, label=None
    ):
        """`score` of each of `texts` on its own (from zero state after `prime`), `batch_size`
        of them per batch; a list of dicts, in order. With `documents` each text is a whole
        document (`log_probability.score_texts`). A conditioned model scores them under
        `label`: one name for all, or a list of one per text (None: <none>)."""
        from textgen.generation import log_probability

        return log_probability.score_texts(
            self,
            texts,
            prime,
            unknown,
            batch_size,
            documents=documents,
            labels=self.label_ids(label, len(texts)),
        )

    def classify(self, texts, batch_size=64, prime=None, unknown="error", documents=True):
        """A generative classifier: (log-probabilities float64 [len(texts), labels], names),
        each text scored (as a whole document, its end token included, with `documents`)
        under every label but <none>; the most likely label of text i is
        names[argmax(row i)]."""
        if not self.labels:
            self.label_ids("classify")  # the error for a model without labels
        names = self.labels[1:]
        scores = np.zeros((len(texts), len(names)))
        for column, name in enumerate(names):
            results = self.score_each(texts, prime, unknown, batch_size, documents, name)
            scores[:, column] = [result["log_prob"] for result in results]
        return scores, names

    def label_log_prior(self, prior="training"):
        """log p(label) for every label but <none>, in `classify`'s order: with `prior`
        "training", the training documents' label frequencies, add-one smoothed (a label a
        fine-tuning source knows but the new corpus lacks keeps a small share); "uniform", or
        a model without label counts, 1/labels each. Bayes' rule then gives classify's
        posterior: log p(label | text) = log p(text | label) + log p(label) - log p(text)."""
        if prior not in PRIORS:
            raise UsageError(f"`prior` must be {' or '.join(PRIORS)}, got {prior!r}")
        if not self.labels:
            self.label_ids("classify")  # the error for a model without labels
        names = self.labels[1:]
        if prior == "uniform" or self.label_counts is None:
            return np.full(len(names), -np.log(len(names)))
        counts = np.asarray(self.label_counts, np.float64) + 1.0
        return np.log(counts / counts.sum())

    def _generate(
        self, prime_ids, num_new, temperature, top_k, seed, forbidden, end_token=None, labels=None
    ):
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
                weights,
                limit,
                prime_ids,
                num_new,
                temperature,
                top_k,
                seed,
                forbidden,
                end=None,
                labels=None,
                precision="float32",
            ):
                lean = LeanLanguageModel(
                    weights,
                    self.cell,
                    self.num_layers,
                    self.hidden_size,
                    xla_max_streams=limit,
                    end_of_document=self.lean_end_of_document(),
                    precision=precision,
                )
                return lean.generate_ids(
                    prime_ids, num_new, temperature, top_k, seed, forbidden, end, labels
                )

            self._generate_fn = tf.function(generate, reduce_retracing=True)
        precision = resolve_precision(self.generation_precision)
        if self._xla_max_streams.get(precision) is None:
            self._xla_max_streams[precision] = loop_choice.xla_max_streams(
                self, precision=precision
            )
        weights = {name: tf.constant(value) for name, value in lean_weights(self).items()}
        return self._generate_fn(
            weights,
            loop_choice.as_tensor(self._xla_max_streams[precision]),
            tf.constant(prime_ids, tf.int32),
            tf.constant(num_new, tf.int32),
            tf.constant(float(temperature)),
            tf.constant(int(top_k)),
            tf.constant(int(seed)),
            tf.constant(forbidden),
            None if end_token is None else int(end_token),
            None if labels is None else tf.constant(labels, tf.int32),
            precision,
        )

    def lean_end_of_document(self):
        """The `end_of_document` of this model's LeanLanguageModel: the token the label acts
        at under --label-injection document-start, else None."""
        if self.labels and self.label_injection == "document-start":
            return self.end_of_document_id("labels")
        return None

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
            labels=self.labels,
            label_embedding_size=self.label_embedding_size,
            label_injection=self.label_injection,
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
