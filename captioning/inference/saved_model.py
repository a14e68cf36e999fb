"""A trained captioner as a self-contained TensorFlow SavedModel: image bytes in, text out.

Written by `python -m captioning.export RUN_DIR OUT_DIR [--overwrite]`; read back by
`load_saved_model`, with one-line errors for a damaged export.

Signatures (`saved_model_cli show --dir OUT_DIR --all` lists them):

    caption (also serving_default)
        inputs:  image_bytes string[B]  JPEG, PNG, GIF or BMP file contents
                 beam_size   int32 scalar  beams per image (1: greedy)
                 max_length  int32 scalar  most words per caption
        outputs: caption     string[B]  words joined by spaces, no <start>/<end>
                 log_prob    float32[B] the caption's log-probability under the model
                                        (<end> included)
    caption_n_best
        inputs:  image_bytes, beam_size, max_length as above
                 n_best      int32 scalar  beams kept per image, 1 <= n_best <= beam_size
        outputs: captions    string[B, n_best]  each image's best distinct beams, best first
                 log_probs   float32[B, n_best] their log-probabilities
    caption_with_options
        inputs:  image_bytes, beam_size, max_length, n_best as above, and the decoding controls
                 of `captioning.caption` (docs/captioning.md#decoding-controls), every one a
                 scalar whose value below gives the plain signatures' output:
                 length_penalty float32 0, length_normalization float32 0,
                 block_repeat_ngrams int32 0, no_repeat_words bool false, bad_endings bool false,
                 diverse_groups int32 1, diversity float32 0,
                 temperature float32 0 (> 0 samples one caption per image instead of beam
                 search, then n_best must be 1), top_k int32 0, top_p float32 1, seed int32 0
        outputs: captions, log_probs as caption_n_best's
    config
        no inputs; outputs config_json (string: the model's settings and the default beam size and
        max length) and vocabulary (string[V]).

A SavedModel signature has no optional inputs, so callers of `signatures["caption"]` pass all
three; the restored object's `caption` function also accepts `image_bytes` alone and then uses the
defaults (`loaded.caption(image_bytes)`; beam 3, 20 words unless --beam-size/--max-length say else).

Decoding the bytes (`tf.io.decode_image`; the first frame of a GIF), the resize to the model's
square input (bicubic with antialiasing; skipped for images already at that size), the CNN, Wih and
beam search all run in the graph, so nothing from this project is needed to use the model. One
undecodable image fails the whole call (TensorFlow's InvalidArgumentError names the problem).

`python -m captioning.caption` reads images with Pillow instead (EXIF orientation, CMYK, 16-bit,
alpha on white, formats TensorFlow cannot decode) and hands the SavedModel PNG bytes already at the
model's size, so its captions are the same from a run directory and from the export.
"""

import contextlib
import gc
import json
import logging
import os

from textgen._quiet_import import import_tensorflow_quietly
from textgen.errors import UsageError
from textgen.io import check_out_directory, replace_directory

DEFAULT_BEAM_SIZE = 3
# caption_with_options' scalar inputs after image_bytes, in order: name -> dtype name.
OPTION_INPUTS = {
    "beam_size": "int32",
    "max_length": "int32",
    "n_best": "int32",
    "length_penalty": "float32",
    "length_normalization": "float32",
    "block_repeat_ngrams": "int32",
    "no_repeat_words": "bool",
    "bad_endings": "bool",
    "diverse_groups": "int32",
    "diversity": "float32",
    "temperature": "float32",
    "top_k": "int32",
    "top_p": "float32",
    "seed": "int32",
}
DEFAULT_MAX_LENGTH = 20
# The decoding controls' values that give the plain `caption` output (DecodeOptions' defaults;
# tests/test_serve.py checks that they agree).
OPTION_DEFAULTS = {
    "length_penalty": 0.0,
    "length_normalization": 0.0,
    "block_repeat_ngrams": 0,
    "no_repeat_words": False,
    "bad_endings": False,
    "diverse_groups": 1,
    "diversity": 0.0,
    "temperature": 0.0,
    "top_k": 0,
    "top_p": 1.0,
    "seed": 0,
}


def decode_image_bytes(image_bytes, image_size):
    """string[B] of encoded images -> uint8 [B, image_size, image_size, 3], in the graph."""
    import_tensorflow_quietly()
    import tensorflow as tf

    def one(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, 3])

        def resize():
            resized = tf.image.resize(
                image, [image_size, image_size], method="bicubic", antialias=True
            )
            return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [image_size, image_size]))
        out = tf.cond(same, lambda: image, resize)
        return tf.ensure_shape(out, [image_size, image_size, 3])

    return tf.map_fn(
        one, image_bytes, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8)
    )


def build_module(model, beam_size=DEFAULT_BEAM_SIZE, max_length=DEFAULT_MAX_LENGTH):
    """(tf.Module holding `model`'s variables and the functions, signatures) for saving."""
    import_tensorflow_quietly()
    import tensorflow as tf

    if beam_size < 1 or max_length < 1:
        raise UsageError(
            f"`beam_size` and `max_length` must be >= 1, got {beam_size} and {max_length}"
        )
    tokens = list(model.vocabulary.tokens)
    config = {
        "format": "captioning-saved-model-1",
        "image_size": model.image_size,
        "encoder": model.encoder_name,
        "cell": model.cell,
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "embedding_size": model.embedding_size,
        "feature_size": model.feature_size,
        "vocabulary_size": len(tokens),
        "default_beam_size": beam_size,
        "default_max_length": max_length,
        # What `python -m textgen.serve` fills in for inputs a request leaves out (a signature
        # has no optional inputs): the values that give the plain `caption` output.
        "serving_defaults": {
            "beam_size": beam_size,
            "max_length": max_length,
            "n_best": 1,
            **OPTION_DEFAULTS,
        },
    }
    config_json = json.dumps(config)
    words = tf.constant(tokens)

    def caption(image_bytes, beam_size=beam_size, max_length=max_length):
        beam_size = tf.convert_to_tensor(beam_size, tf.int32)
        max_length = tf.convert_to_tensor(max_length, tf.int32)
        tf.debugging.assert_positive(beam_size, "beam_size must be >= 1")
        tf.debugging.assert_positive(max_length, "max_length must be >= 1")
        pixels = decode_image_bytes(image_bytes, model.image_size)
        features = model.encode(pixels, training=False)
        ids, log_probs, lengths = model.caption_ids(features, max_length, beam_size)
        return {"caption": ids_to_text(ids, lengths), "log_prob": log_probs}

    def ids_to_text(ids, lengths):
        ids = tf.RaggedTensor.from_tensor(ids, lengths=lengths)
        text = tf.strings.reduce_join(tf.gather(words, ids), axis=1, separator=" ")
        # As captioning.datasets.tokens.caption_text: no space before , . ; : ! ? )
        return tf.strings.regex_replace(text, r" ([,.;:!?)])", r"\1")

    def caption_n_best(image_bytes, beam_size, max_length, n_best):
        tf.debugging.assert_positive(beam_size, "beam_size must be >= 1")
        tf.debugging.assert_positive(max_length, "max_length must be >= 1")
        tf.debugging.assert_positive(n_best, "n_best must be >= 1")
        tf.debugging.assert_less_equal(n_best, beam_size, "n_best must be <= beam_size")
        pixels = decode_image_bytes(image_bytes, model.image_size)
        features = model.encode(pixels, training=False)
        ids, log_probs, lengths = model.caption_ids(features, max_length, beam_size, n_best=n_best)
        shape = tf.shape(ids)
        text = ids_to_text(
            tf.reshape(ids, [shape[0] * shape[1], shape[2]]), tf.reshape(lengths, [-1])
        )
        return {"captions": tf.reshape(text, shape[:2]), "log_probs": log_probs}

    def caption_with_options(
        image_bytes,
        beam_size,
        max_length,
        n_best,
        length_penalty,
        length_normalization,
        block_repeat_ngrams,
        no_repeat_words,
        bad_endings,
        diverse_groups,
        diversity,
        temperature,
        top_k,
        top_p,
        seed,
    ):
        tf.debugging.assert_positive(beam_size, "beam_size must be >= 1")
        tf.debugging.assert_positive(max_length, "max_length must be >= 1")
        tf.debugging.assert_positive(n_best, "n_best must be >= 1")
        tf.debugging.assert_less_equal(n_best, beam_size, "n_best must be <= beam_size")
        tf.debugging.assert_positive(diverse_groups, "diverse_groups must be >= 1")
        tf.debugging.assert_non_negative(temperature, "temperature must be >= 0")
        tf.debugging.assert_positive(top_p, "top_p must be in (0, 1]")
        sampled = temperature > 0
        tf.debugging.Assert(
            ~sampled | tf.equal(n_best, 1), ["n_best must be 1 when temperature > 0"]
        )
        pixels = decode_image_bytes(image_bytes, model.image_size)
        features = model.encode(pixels, training=False)
        controls = model.beam_controls(
            length_penalty=length_penalty,
            length_normalization=length_normalization,
            block_repeat_ngrams=block_repeat_ngrams,
            no_repeat_words=no_repeat_words,
            bad_endings=bad_endings,
            diverse_groups=diverse_groups,
            diversity=diversity,
        )

        def searched():
            return model.caption_ids(
                features, max_length, beam_size, n_best=n_best, controls=controls
            )

        def drawn():
            ids, log_probs, lengths = model.sample_ids(
                features, max_length, temperature, top_k, seed, top_p=top_p
            )
            return ids[:, None], log_probs[:, None], lengths[:, None]

        ids, log_probs, lengths = tf.cond(sampled, drawn, searched)
        shape = tf.shape(ids)
        text = ids_to_text(
            tf.reshape(ids, [shape[0] * shape[1], shape[2]]), tf.reshape(lengths, [-1])
        )
        return {"captions": tf.reshape(text, shape[:2]), "log_probs": log_probs}

    def model_config():
        return {"config_json": tf.constant(config_json), "vocabulary": words}

    module = tf.Module(name="captioner")
    # What keras.export.ExportArchive.track does: the Keras variables' tf.Variables, tracked by
    # the module, so that the functions below capture and save them.
    module.model_variables = [v.value for v in model.variables]
    module.caption = tf.function(caption, autograph=False)
    module.config = tf.function(model_config, input_signature=[], autograph=False)
    scalar = tf.TensorSpec([], tf.int32)
    module.caption_n_best = tf.function(
        caption_n_best,
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec.from_spec(scalar, name="beam_size"),
            tf.TensorSpec.from_spec(scalar, name="max_length"),
            tf.TensorSpec.from_spec(scalar, name="n_best"),
        ],
        autograph=False,
    )
    module.caption_with_options = tf.function(
        caption_with_options,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
        + [tf.TensorSpec([], dtype, name=name) for name, dtype in OPTION_INPUTS.items()],
        autograph=False,
    )
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    full = module.caption.get_concrete_function(
        bytes_spec,
        tf.TensorSpec([], tf.int32, name="beam_size"),
        tf.TensorSpec([], tf.int32, name="max_length"),
    )
    module.caption.get_concrete_function(bytes_spec)  # loaded.caption(image_bytes): defaults
    signatures = {
        "caption": full,
        "serving_default": full,
        "config": module.config.get_concrete_function(),
        "caption_n_best": module.caption_n_best.get_concrete_function(),
        "caption_with_options": module.caption_with_options.get_concrete_function(),
    }
    return module, signatures


def export_saved_model(
    model,
    out_directory,
    overwrite=False,
    beam_size=DEFAULT_BEAM_SIZE,
    max_length=DEFAULT_MAX_LENGTH,
    also=None,
):
    """Writes `model` as a SavedModel in `out_directory`, atomically: into a temporary directory
    that is renamed into place (textgen.io.replace_directory), so a failed export leaves the
    old model or nothing, never half of one. `also`, a function of the folder being written,
    writes more files beside the SavedModel in the same write (the edge exports:
    `captioning.inference.edge_export.edge_writer`)."""
    import_tensorflow_quietly()
    import tensorflow as tf

    check_out_directory(out_directory, overwrite)
    # The sampled branch of caption_with_options scores its captions with a teacher-forced
    # pass, which would trace textgen's C++ LSTM ops: a SavedModel must run without them.
    native = model.recurrent_stack.use_native_ops
    model.recurrent_stack.use_native_ops = False
    try:
        module, signatures = build_module(model, beam_size, max_length)

        def write(path):
            tf.saved_model.save(module, path, signatures)
            if also is not None:
                also(path)

        replace_directory(out_directory, write)
    finally:
        model.recurrent_stack.use_native_ops = native
    return out_directory


# ---- reading it back ----

DAMAGED_EXPORT = (
    "the SavedModel is damaged: restore it from a copy or export it again with "
    "`python -m captioning.export RUN_DIR OUT_DIR`"
)
NOT_OURS = (
    "pass a captioning.train run directory or a SavedModel written by "
    "`python -m captioning.export RUN_DIR OUT_DIR`"
)


@contextlib.contextmanager
def quiet_tensorflow_log():
    """TensorFlow logs a warning per unrestored variable (and a traceback for an unreadable
    fingerprint.pb) on its way to an error; the one line a CLI prints says it all."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()  # the unrestored-value warnings come when the half-loaded objects die
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def load_saved_model(path):
    """(the loaded SavedModel at `path`, its config dict), as `export_saved_model` wrote them.
    A damaged or foreign one is a UsageError of one line naming the file at fault,
    saved_model.pb or variables/, which TensorFlow's own errors do not reliably do."""
    import_tensorflow_quietly()
    import tensorflow as tf

    with quiet_tensorflow_log():
        try:
            loaded = tf.saved_model.load(path)
            config = json.loads(loaded.signatures["config"]()["config_json"].numpy())
            int(config["image_size"]), loaded.signatures["caption"]  # what callers rely on
            return loaded, config
        # What a damaged SavedModel raises: parse and read errors (OpError; DecodeError is a
        # ValueError), a short read (IndexError), variables that match no object (AssertionError).
        except (
            tf.errors.OpError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AssertionError,
            OSError,
        ) as error:
            failure = " ".join(str(error).split())[:200]
        # Outside the except clause the failed load's objects can die (quietly) before we raise.
        problem = saved_model_problem(path, failure)
    raise UsageError(problem)


def saved_model_problem(path, failure):
    """Why the SavedModel at `path` failed to load with the error text `failure`: one line
    naming the file at fault."""
    import_tensorflow_quietly()
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    graph = os.path.join(path, "saved_model.pb")
    if os.path.isdir(graph):
        return f"{graph} is a directory, not a file; {DAMAGED_EXPORT}"
    if not os.path.isfile(graph):
        return f"{path} has no saved_model.pb; {NOT_OURS}"
    try:
        with open(graph, "rb") as f:
            data = f.read()
    except OSError as error:
        return f"{graph} cannot be read ({error.strerror or error}); {DAMAGED_EXPORT}"
    if not data:
        return f"{graph} is empty; {DAMAGED_EXPORT}"
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(data)
    except DecodeError as error:
        return f"{graph} is not a SavedModel protobuf ({error}); {DAMAGED_EXPORT}"
    if len(saved_model.meta_graphs) != 1:
        return (
            f"{graph} holds {len(saved_model.meta_graphs)} MetaGraphs, not the one an export "
            f"writes; {DAMAGED_EXPORT}"
        )
    signatures = sorted(saved_model.meta_graphs[0].signature_def)
    if not {"caption", "config"} <= set(signatures):
        return (
            f"{graph} is not a captioning SavedModel (its signatures: "
            f"{', '.join(signatures) or 'none'}); {NOT_OURS}"
        )

    variables = os.path.join(path, "variables")
    if not os.path.isdir(variables):
        what = "is not a directory" if os.path.exists(variables) else "is missing"
        return f"{variables} {what}; {DAMAGED_EXPORT}"
    if not os.listdir(variables):
        return f"{variables} is empty; {DAMAGED_EXPORT}"
    try:
        reader = tf.train.load_checkpoint(os.path.join(variables, "variables"))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)  # reads the data file too, checksums included
    except (tf.errors.OpError, ValueError, IndexError) as error:
        return (
            f"{variables} cannot be read ({' '.join(str(error).split())[:160]}); {DAMAGED_EXPORT}"
        )
    # Both parts are sound on their own: the variables are another export's.
    return (
        f"{variables} does not hold the variables saved_model.pb needs ({failure}); "
        f"{DAMAGED_EXPORT}"
    )
