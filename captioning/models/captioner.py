"""Captioner: image -> ImageEncoder -> feature vector v; tokens -> Embedding; both into textgen's
RecurrentStack; Dense logits over the caption vocabulary.

The image enters through a learned projection at the FIRST step only, as in cs231n's captioning
RNN: h1 = tanh(Wxh x0 + Whh h0 + Wih v + b) with x0 the embedding of <start>. For an LSTM or GRU
Wih v is added to the pre-activation of every gate at the first step only.

Wih is textgen's conditioning projection (`textgen.network.conditioning`), the one a
label-conditioned language model uses too: the input at step t is concat(embedding(token_t),
v * 1{t == 0}), i.e. the feature vector is an extra input channel that is zero at every later
step, so the first recurrent layer's kernel has [embedding_size + feature_size] rows; rows
[:embedding_size] are Wxh and rows [embedding_size:] are Wih (see `input_projections`).

The model builds and loads itself (`from_train_config`, `from_run_directory`), so that training,
captioning, evaluation and export all read a run directory the same way.
"""

import keras
import numpy as np
import tensorflow as tf

from captioning import config as config_lib
from captioning.datasets.tokens import (
    BAD_ENDINGS,
    END,
    PAD,
    REPEATABLE_WORDS,
    START,
    UNKNOWN,
    check_vocabulary,
)
from captioning.models.image_encoder import ImageEncoder
from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError
from textgen.generation.beam_controls import BeamControls, word_mask
from textgen.generation.beam_search import beam_search
from textgen.generation.decode_loop import decode_loop
from textgen.generation.samplers import NucleusSampler, make_sampler
from textgen.network import conditioning
from textgen.network.recurrent_stack import RecurrentStack
from textgen.training.run_directory import RunDirectory, assign_variables


@keras.saving.register_keras_serializable(package="captioning")
class Captioner(keras.Model):
    """CNN encoder + recurrent decoder with explicit states, cs231n / neuraltalk2 style.

    `model({"images": uint8 [B, S, S, 3], "tokens": int [B, T]})` (or "features": [B, F] in place
    of "images") returns teacher-forced logits [B, T, vocabulary]: position t predicts token t+1.

    Args:
        vocabulary: the caption vocabulary (`captioning.datasets.tokens.build_vocabulary`: <pad> =
        0,
            <start>, <end>, <unk>), as a Vocabulary or its token list.
        encoder: "small" or a keras.applications backbone name (see `ImageEncoder`).
        encoder_weights: "none", "imagenet" or a weights file path.
        image_size: input width and height (None: the encoder's own).
        feature_size: small encoder only: the length of v.
        encoder_filters: small encoder only: its convolution channels.
        encoder_spatial: small encoder only: how its final map's layout reaches v (`SmallCNN`'s
            `spatial`).
        cell, num_layers, hidden_size, dropout, fused: see `textgen.RecurrentStack`.
        embedding_size: size of the token embedding.
        seed: seed of the dropout masks.
    """

    def __init__(
        self,
        vocabulary,
        encoder="small",
        encoder_weights="none",
        image_size=None,
        feature_size=256,
        encoder_filters=(32, 64, 64, 128),
        cell="lstm",
        num_layers=1,
        hidden_size=256,
        embedding_size=64,
        dropout=0.0,
        fused=None,
        seed=None,
        encoder_spatial="flatten",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(vocabulary, Vocabulary):
            vocabulary = Vocabulary(vocabulary, unknown_token=UNKNOWN)
        check_vocabulary(vocabulary)
        self.vocabulary = vocabulary
        self.encoder_name = encoder
        self.encoder_weights = encoder_weights
        self.embedding_size = embedding_size
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.fused = fused
        self.seed = seed
        self.encoder = ImageEncoder(
            encoder,
            encoder_weights,
            image_size,
            feature_size,
            encoder_filters,
            encoder_spatial,
            name="encoder",
        )
        self.encoder_spatial = self.encoder.spatial
        self.image_size = self.encoder.image_size
        self.feature_size = self.encoder.output_size
        self.encoder_filters = self.encoder.filters
        self.small_feature_size = feature_size
        self.embedding = keras.layers.Embedding(len(vocabulary), embedding_size, name="embedding")
        self.recurrent_stack = RecurrentStack(
            cell, num_layers, hidden_size, dropout, fused, seed, name="recurrent_stack"
        )
        self.output_layer = keras.layers.Dense(len(vocabulary), name="logits")
        self.pad_id, self.start_id, self.end_id = (vocabulary.id(t) for t in (PAD, START, END))
        self.unknown_id = vocabulary.id(UNKNOWN)
        self._generate_fns = {}

    # ---- building and loading, beside the model (nanoGPT's `from_pretrained`) ----------------
    @classmethod
    def from_train_config(cls, config, vocabulary, encoder_weights=None):
        """The built, untrained Captioner that the CaptionTrainConfig `config` describes.
        `encoder_weights` overrides the config's (e.g. "none" when the weights come from a
        checkpoint anyway, so that loading a run downloads no ImageNet weights)."""
        fused = {"auto": None, "on": True, "off": False}[config.fused]
        model = cls(
            vocabulary,
            encoder=config.encoder,
            encoder_weights=encoder_weights or config_lib.resolved_encoder_weights(config),
            image_size=config_lib.resolved_image_size(config),
            feature_size=config.feature_size,
            encoder_filters=config_lib.parse_filters(config.encoder_filters),
            encoder_spatial=config.encoder_spatial,
            cell=config.cell,
            num_layers=config.num_layers,
            hidden_size=config.hidden_size,
            embedding_size=config.embedding_size,
            dropout=config.dropout,
            fused=fused,
            seed=config.seed,
        )
        model.build()
        return model

    @classmethod
    def from_run_directory(cls, path):
        """The trained Captioner of a `captioning.train` run directory: built from its
        config.json and vocab.json, with the weights of its checkpoint. The run's
        CaptionTrainConfig is kept as `model.train_config`. A missing or damaged file is a
        UsageError naming it."""
        run = RunDirectory(path)
        if not run.has_checkpoint():
            raise UsageError(
                f"{run.path} holds no checkpoint ({run.CHECKPOINT}); train first with "
                f"`python -m captioning.train --out {run.path} ...`"
            )
        config = config_lib.from_dict(run.load_config(config_lib.CaptionTrainConfig))
        vocabulary = run.load_vocabulary()
        check_vocabulary(vocabulary, run.vocabulary_path)  # a bad one names vocab.json
        model = cls.from_train_config(config, vocabulary, encoder_weights="none")
        groups, _ = run.load_checkpoint()
        assign_variables(model.variables, groups.get("model", []), "model")
        model.train_config = config
        return model

    def build(self, input_shape=None):
        self.embedding.build((None, None))
        self.recurrent_stack.build((None, None, self.embedding_size + self.feature_size))
        self.output_layer.build((None, None, self.hidden_size))
        self.built = True

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    # ---- weights ------------------------------------------------------------------------------
    def input_projections(self):
        """(Wxh [embedding_size, gates*H], Wih [feature_size, gates*H]): the two row blocks of
        the first recurrent layer's kernel (Keras gate order: LSTM i, f, c, o; GRU z, r, h)."""
        return conditioning.input_projections(self.recurrent_stack, self.embedding_size)

    def encoder_variables(self):
        return self.encoder.trainable_variables

    def decoder_variables(self):
        encoder = {id(v) for v in self.encoder.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in encoder]

    # ---- teacher forcing ----------------------------------------------------------------------
    def encode(self, images, training=False):
        """uint8 pixels [B, S, S, 3] -> features v [B, F]."""
        return self.encoder(images, training=training)

    def initial_states(self, batch_size):
        return self.recurrent_stack.initial_states(batch_size)

    def recurrent_inputs(self, features, tokens):
        """concat(embedding(tokens), v * 1{t == 0}): [B, T, embedding_size + feature_size]."""
        return conditioning.conditioned_inputs(
            self.embedding(tokens), features, conditioning.first_step_mask(tokens)
        )

    def decode(self, features, tokens, training=False):
        """features [B, F], tokens [B, T] (starting with <start>) ->
        (top-layer outputs [B, T, H], final states); the states start from zeros."""
        x = self.recurrent_inputs(features, tokens)
        states = self.initial_states(tf.shape(tokens)[0])
        return self.recurrent_stack(x, states, training=training)

    def call(self, inputs, training=False):
        tokens = inputs["tokens"]
        features = (
            inputs["features"] if "features" in inputs else self.encode(inputs["images"], training)
        )
        outputs, _ = self.decode(features, tokens, training=training)
        return self.output_layer(outputs)

    # ---- generation ----------------------------------------------------------------------------
    def start_states(self, features):
        """Decoding states for `step`: [image channel, words so far, *recurrent states]. The image
        channel is v for the first step (the one that feeds <start>) and zero afterwards; the
        word count lets `step` force <end> once a caption has `max_length` words."""
        features = tf.convert_to_tensor(features, self.compute_dtype)
        batch = tf.shape(features)[0]
        return [features, tf.zeros([batch], tf.int32)] + self.initial_states(batch)

    def step(self, tokens, states, max_length=None):
        """One decoding step for textgen's decode_loop and beam_search: (tokens [B], states) ->
        (logits [B, V], states). The first step sees v through the image channel and hands on
        zeros. With `max_length`, a row that already has that many words can only emit <end>."""
        image_channel, words, recurrent = states[0], states[1], list(states[2:])
        x = tf.concat([tf.gather(self.embedding.embeddings, tokens), image_channel], axis=-1)
        outputs, recurrent = self.recurrent_stack.step(x, recurrent)
        logits = tf.cast(self.output_layer(outputs), tf.float32)
        if max_length is not None:
            only_end = tf.where(tf.range(self.vocabulary_size) == self.end_id, 0.0, -1e9)
            logits = tf.where((words >= max_length)[:, None], only_end[None], logits)
        return logits, [tf.zeros_like(image_channel), words + 1] + list(recurrent)

    def forbidden_tokens(self, allow_unknown=False):
        """bool [V]: tokens decoding never emits: <pad>, <start>, and <unk> unless allowed."""
        mask = np.zeros(len(self.vocabulary), bool)
        mask[[self.pad_id, self.start_id]] = True
        if not allow_unknown:
            mask[self.unknown_id] = True
        return tf.constant(mask)

    def beam_controls(self, **values):
        """textgen's BeamControls for this vocabulary: `values` are BeamControls' fields
        (numbers, or tensors in an exported model), and the word lists of --no-repeat-words and
        --bad-endings become masks over the vocabulary."""
        tokens = self.vocabulary.tokens
        return BeamControls(
            **values,
            repeatable=word_mask(tokens, REPEATABLE_WORDS),
            bad_ending_tokens=word_mask(tokens, BAD_ENDINGS),
        )

    def caption_ids(
        self,
        features,
        max_length,
        beam_size=1,
        length_normalization=0.0,
        allow_unknown=False,
        n_best=None,
        controls=None,
    ):
        """Beam search (beam_size 1: greedy) from <start> to <end>, all TensorFlow ops, so the
        exported SavedModel runs exactly this. `max_length` and `beam_size` may be tensors.

        Returns (token ids [B, max_length + 1] int32, padded with <end>; log-probabilities [B]
        of the captions, <end> included; lengths [B]: words before <end>, at most max_length).
        With `n_best` k (<= beam_size): the k best distinct beams of every image, best first, as
        [B, k, max_length + 1], [B, k] and [B, k] (textgen's beam_search `num_results`).
        `controls`: a BeamControls (`beam_controls`), whose length normalisation then replaces
        the argument's.
        """
        max_length = tf.convert_to_tensor(max_length, tf.int32)

        def step(tokens, states):
            return self.step(tokens, states, max_length)

        start = tf.fill([tf.shape(features)[0]], self.start_id)
        return beam_search(
            step,
            start,
            self.start_states(features),
            max_length + 1,
            beam_size,
            self.end_id,
            self.forbidden_tokens(allow_unknown),
            length_normalization,
            n_best,
            controls,
        )

    def sample_ids(
        self, features, max_length, temperature=1.0, top_k=0, seed=0, allow_unknown=False, top_p=1.0
    ):
        """Captions drawn with textgen's samplers through textgen's decode_loop; returns the same
        triple as `caption_ids`, the log-probabilities being the model's (temperature 1)."""
        tokens, lengths = self.draw_ids(
            features, max_length, temperature, top_k, seed, allow_unknown, top_p
        )
        return tokens, self.sequence_log_probs(features, tokens, lengths, allow_unknown), lengths

    def draw_ids(
        self, features, max_length, temperature=1.0, top_k=0, seed=0, allow_unknown=False, top_p=1.0
    ):
        """(token ids [B, max_length + 1] padded with <end>, lengths [B]) drawn by textgen's
        decode_loop with its sampler; `seed` (an int32 scalar, may be a tensor) fixes the draws.
        `top_p` below 1 (or a tensor) draws from the nucleus (textgen's NucleusSampler)."""
        max_length = tf.convert_to_tensor(max_length, tf.int32)

        def step(tokens, states):
            return self.step(tokens, states, max_length)

        start = tf.fill([tf.shape(features)[0]], self.start_id)
        return decode_loop(
            step,
            start,
            self.start_states(features),
            max_length + 1,
            (
                NucleusSampler(top_k, top_p, temperature)
                if tf.is_tensor(top_p)
                else make_sampler(temperature, top_k, top_p)
            ),
            tf.stack([tf.cast(seed, tf.int32), 0]),
            self.forbidden_tokens(allow_unknown),
            self.end_id,
        )

    def sequence_log_probs(self, features, tokens, lengths, allow_unknown=False, training=False):
        """log p(caption | image) [B] of generated tokens [B, T] (padded with <end>; lengths [B]
        words each, <end> counted once), by one teacher-forced pass over <start> + tokens, with
        the decoding's forbidden tokens excluded. Differentiable: self-critical training's
        log p(sample)."""
        start = tf.fill([tf.shape(tokens)[0], 1], self.start_id)
        inputs = tf.concat([start, tokens[:, :-1]], axis=1)
        outputs, _ = self.decode(features, inputs, training=training)
        logits = tf.cast(self.output_layer(outputs), tf.float32)
        logits = tf.where(self.forbidden_tokens(allow_unknown), -1e9, logits)
        token_log_probs = tf.gather(tf.nn.log_softmax(logits), tokens, batch_dims=2)
        counted = tf.sequence_mask(lengths + 1, tf.shape(tokens)[1])  # the words and one <end>
        return tf.reduce_sum(tf.where(counted, token_log_probs, 0.0), axis=1)

    def caption(
        self,
        features,
        max_length=20,
        beam_size=1,
        temperature=0.0,
        top_k=0,
        seed=0,
        allow_unknown=False,
        length_normalization=0.0,
        controls=None,
        top_p=1.0,
    ):
        """Captions for features [B, F]: beam search at temperature 0 (beam_size 1 is greedy),
        else sampled (`top_k`, `top_p`). Never <pad> or <start>; <unk> only with
        `allow_unknown`. `controls`: a dict of BeamControls' values (length_penalty,
        block_repeat_ngrams, no_repeat_words, bad_endings, diverse_groups, diversity); None or
        the defaults leave beam search as it is without them.

        Returns numpy (token ids [B, max_length + 1], log-probabilities [B], lengths [B]).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        sampled = temperature > 0
        controls = active_controls(controls)
        key = (
            sampled,
            float(temperature),
            int(top_k),
            float(top_p),
            bool(allow_unknown),
            float(length_normalization),
            tuple(sorted(controls.items())) if controls else None,
        )
        if key not in self._generate_fns:
            if sampled:

                def run(f, n, beam, seed):
                    return self.sample_ids(f, n, temperature, top_k, seed, allow_unknown, top_p)
            else:

                def run(f, n, beam, seed):
                    return self.caption_ids(
                        f,
                        n,
                        beam,
                        length_normalization,
                        allow_unknown,
                        None,
                        self.controls_for(controls, length_normalization),
                    )

            self._generate_fns[key] = tf.function(run, reduce_retracing=True, autograph=False)
        tokens, log_probs, lengths = self._generate_fns[key](
            tf.convert_to_tensor(features, tf.float32),
            tf.constant(int(max_length), tf.int32),
            tf.constant(int(beam_size), tf.int32),
            tf.constant(int(seed), tf.int32),
        )
        return tokens.numpy(), log_probs.numpy(), lengths.numpy()

    def controls_for(self, controls, length_normalization):
        """The BeamControls of `controls` (from `active_controls`), or None for none."""
        if not controls:
            return None
        return self.beam_controls(**controls, length_normalization=length_normalization)

    def n_best(
        self,
        features,
        max_length=20,
        beam_size=3,
        n_best=3,
        allow_unknown=False,
        length_normalization=0.0,
        controls=None,
    ):
        """The `n_best` best beams of each image: numpy (token ids [B, n_best, max_length + 1],
        log-probabilities [B, n_best], lengths [B, n_best]), best first. `controls` as in
        `caption`."""
        controls = active_controls(controls)
        key = (
            "n_best",
            bool(allow_unknown),
            float(length_normalization),
            tuple(sorted(controls.items())) if controls else None,
        )
        if key not in self._generate_fns:

            def run(f, n, beam, k):
                return self.caption_ids(
                    f,
                    n,
                    beam,
                    length_normalization,
                    allow_unknown,
                    k,
                    self.controls_for(controls, length_normalization),
                )

            self._generate_fns[key] = tf.function(run, reduce_retracing=True, autograph=False)
        tokens, log_probs, lengths = self._generate_fns[key](
            tf.convert_to_tensor(features, tf.float32),
            tf.constant(int(max_length), tf.int32),
            tf.constant(int(beam_size), tf.int32),
            tf.constant(int(n_best), tf.int32),
        )
        return tokens.numpy(), log_probs.numpy(), lengths.numpy()

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=self.vocabulary.tokens,
            encoder=self.encoder_name,
            encoder_weights=self.encoder_weights,
            image_size=self.image_size,
            feature_size=self.small_feature_size,
            encoder_filters=list(self.encoder_filters),
            cell=self.cell,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            embedding_size=self.embedding_size,
            dropout=self.dropout,
            fused=self.fused,
            seed=self.seed,
            encoder_spatial=self.encoder_spatial,
        )
        return config


# The beam controls (textgen.generation.beam_controls) at the values that change nothing.
DEFAULT_CONTROLS = {
    "length_penalty": 0.0,
    "block_repeat_ngrams": 0,
    "no_repeat_words": False,
    "bad_endings": False,
    "diverse_groups": 1,
    "diversity": 0.0,
}


def active_controls(controls):
    """`controls` (a dict of DEFAULT_CONTROLS' keys) completed with the defaults, or None when
    every value is a default, so that decoding without controls runs the search it always ran.
    An unknown key is a ValueError."""
    controls = dict(controls or {})
    unknown = set(controls) - set(DEFAULT_CONTROLS)
    if unknown:
        raise ValueError(
            f"unknown beam controls {sorted(unknown)}; known: {list(DEFAULT_CONTROLS)}"
        )
    controls = {**DEFAULT_CONTROLS, **controls}
    return None if controls == DEFAULT_CONTROLS else controls
