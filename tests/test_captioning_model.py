"""The captioning model: the image enters at the first step only (checked against NumPy on the
model's own weights), the step function used for decoding, config round trip, the masked loss,
the encoders and their weights. Tiny sizes; a few seconds in all."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioning.datasets.tokens import END, PAD, SPECIALS, START, UNKNOWN, build_vocabulary
from captioning.inference.decoding import caption_features, decode_features
from captioning.models.captioner import Captioner
from captioning.models.image_encoder import ImageEncoder, default_image_size
from captioning.models.small_cnn import SPATIAL, SmallCNN
from captioning.training.losses import masked_cross_entropy, masked_loss, teacher_forcing
from helpers import assert_config_round_trip
from textgen.errors import UsageError

WORDS = [
    ["a", "small", "red", "circle"],
    ["a", "large", "blue", "square", "left", "of", "a", "small", "red", "circle"],
]
E, F, H = 3, 6, 5  # embedding, feature and hidden sizes


@pytest.fixture(scope="module")
def vocabulary():
    return build_vocabulary(WORDS)


def tiny_model(vocabulary, cell="rnn", num_layers=1, fused=None, seed=1):
    keras.utils.set_random_seed(seed)
    model = Captioner(
        vocabulary,
        encoder="small",
        image_size=16,
        feature_size=F,
        encoder_filters=(4, 4),
        cell=cell,
        num_layers=num_layers,
        hidden_size=H,
        embedding_size=E,
        fused=fused,
    )
    model.build()
    # Non-zero biases, so that the NumPy check covers them.
    for layer in model.recurrent_stack.recurrent_layers:
        bias = layer.cell.bias
        bias.assign(np.random.default_rng(seed).normal(0, 0.3, bias.shape).astype("float32"))
    return model


def token_batch(vocabulary, rows=2):
    ids = [vocabulary.id(START)] + [vocabulary.id(w) for w in WORDS[1][:5]]
    return np.tile(np.array(ids, np.int32), (rows, 1))


def features(rows=2, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (rows, F)).astype("float32")


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def weights(model):
    cell = model.recurrent_stack.recurrent_layers[0].cell
    kernel, recurrent, bias = (
        np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )
    embedding = np.asarray(model.embedding.embeddings)
    return kernel[:E], kernel[E:], recurrent, bias, embedding


def test_input_projections_are_the_kernel_slices(vocabulary):
    model = tiny_model(vocabulary, "lstm")
    wxh, wih = model.input_projections()
    kernel = np.asarray(model.recurrent_stack.recurrent_layers[0].cell.kernel)
    assert kernel.shape == (E + F, 4 * H)
    np.testing.assert_array_equal(np.asarray(wxh), kernel[:E])
    np.testing.assert_array_equal(np.asarray(wih), kernel[E:])


@pytest.mark.parametrize("fused", [True, False])
def test_rnn_first_step_is_tanh_of_wxh_x0_whh_h0_wih_v(vocabulary, fused):
    model = tiny_model(vocabulary, "rnn", fused=fused)
    wxh, wih, whh, b, embedding = weights(model)
    v, tokens = features(), token_batch(vocabulary)
    outputs, _ = model.decode(v, tokens)
    outputs = np.asarray(outputs)
    x = embedding[tokens]
    h0 = np.zeros((2, H), np.float32)
    h1 = np.tanh(x[:, 0] @ wxh + h0 @ whh + v @ wih + b)
    np.testing.assert_allclose(outputs[:, 0], h1, rtol=1e-5, atol=1e-6)
    # Step 2 onwards: Wih v is gone; h2 follows from h1 and x1 alone.
    h2 = np.tanh(x[:, 1] @ wxh + h1 @ whh + b)
    np.testing.assert_allclose(outputs[:, 1], h2, rtol=1e-5, atol=1e-6)
    h = h1
    for t in range(1, tokens.shape[1]):
        h = np.tanh(x[:, t] @ wxh + h @ whh + b)
        np.testing.assert_allclose(outputs[:, t], h, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_lstm_gates_get_wih_v_at_step_one_only(vocabulary, fused):
    model = tiny_model(vocabulary, "lstm", fused=fused)
    wxh, wih, whh, b, embedding = weights(model)
    v, tokens = features(), token_batch(vocabulary)
    x = embedding[tokens]

    def lstm(z, c):  # Keras gate order i, f, c, o
        i, f = sigmoid(z[:, :H]), sigmoid(z[:, H : 2 * H])
        g, o = np.tanh(z[:, 2 * H : 3 * H]), sigmoid(z[:, 3 * H :])
        c = f * c + i * g
        return o * np.tanh(c), c

    h0 = c0 = np.zeros((2, H), np.float32)
    z1 = x[:, 0] @ wxh + h0 @ whh + v @ wih + b  # every gate's pre-activation includes Wih v
    h1, c1 = lstm(z1, c0)
    _, (model_h1, model_c1) = model.decode(v, tokens[:, :1])
    np.testing.assert_allclose(np.asarray(model_h1), h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model_c1), c1, rtol=1e-5, atol=1e-6)
    # Without the Wih v term the first step would differ, for every gate.
    assert np.abs(lstm(z1 - v @ wih, c0)[1] - c1).max() > 1e-3
    # Step 2: the pre-activations follow from h1, c1 and x1 alone.
    z2 = x[:, 1] @ wxh + h1 @ whh + b
    h2, c2 = lstm(z2, c1)
    outputs, (model_h2, model_c2) = model.decode(v, tokens[:, :2])
    np.testing.assert_allclose(np.asarray(model_h2), h2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model_c2), c2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(outputs)[:, 0], h1, rtol=1e-5, atol=1e-6)


def test_gru_gates_get_wih_v_at_step_one_only(vocabulary):
    model = tiny_model(vocabulary, "gru")
    wxh, wih, whh, b, embedding = weights(model)  # GRU bias: [input bias, recurrent bias]
    v, tokens = features(), token_batch(vocabulary)
    x = embedding[tokens]

    def gru(xz, h):  # Keras reset_after=True, gate order z, r, h
        inner = h @ whh + b[1]
        z = sigmoid(xz[:, :H] + inner[:, :H])
        r = sigmoid(xz[:, H : 2 * H] + inner[:, H : 2 * H])
        candidate = np.tanh(xz[:, 2 * H :] + r * inner[:, 2 * H :])
        return z * h + (1 - z) * candidate

    h1 = gru(x[:, 0] @ wxh + v @ wih + b[0], np.zeros((2, H), np.float32))
    h2 = gru(x[:, 1] @ wxh + b[0], h1)
    outputs, _ = model.decode(v, tokens[:, :2])
    np.testing.assert_allclose(np.asarray(outputs)[:, 0], h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(outputs)[:, 1], h2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_feature_vector_is_an_input_channel_of_step_one_only(vocabulary, cell):
    model = tiny_model(vocabulary, cell, num_layers=2)
    tokens = token_batch(vocabulary, rows=3)
    v = features(rows=3)
    v[1] = v[0]  # rows 0 and 1: same image; row 2: another
    inputs = np.asarray(model.recurrent_inputs(v, tokens))
    np.testing.assert_array_equal(inputs[:, 0, E:], v)
    assert not inputs[:, 1:, E:].any()  # zero at every later step
    embedding = np.asarray(model.embedding.embeddings)
    np.testing.assert_array_equal(inputs[:, :, :E], embedding[tokens])

    logits = np.asarray(model({"features": v, "tokens": tokens}))
    np.testing.assert_array_equal(logits[0], logits[1])  # same v, same tokens: same outputs
    # Another v changes every step's output: the state carries step 1 forward.
    assert (np.abs(logits[2] - logits[0]).max(axis=-1) > 1e-6).all()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_function_matches_teacher_forcing(vocabulary, cell):
    model = tiny_model(vocabulary, cell, num_layers=2)
    v, tokens = features(), token_batch(vocabulary)
    expected = np.asarray(model({"features": v, "tokens": tokens}))
    states = model.start_states(v)
    for t in range(tokens.shape[1]):
        logits, states = model.step(tf.constant(tokens[:, t]), states)
        np.testing.assert_allclose(np.asarray(logits), expected[:, t], rtol=1e-5, atol=1e-5)
        assert not np.asarray(states[0]).any()  # the image channel is zero after the first step


def test_images_and_features_give_the_same_logits(vocabulary):
    model = tiny_model(vocabulary, "lstm")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    tokens = token_batch(vocabulary)
    v = model.encode(pixels)
    assert tuple(v.shape) == (2, F)
    np.testing.assert_allclose(
        np.asarray(model({"images": pixels, "tokens": tokens})),
        np.asarray(model({"features": v, "tokens": tokens})),
        rtol=1e-6,
    )


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    """A local weights file for a 32x32 mobilenet_v3_small backbone (not the default encoder)."""
    path = str(tmp_path_factory.mktemp("weights") / "mobilenet.weights.h5")
    ImageEncoder("mobilenet_v3_small", "none", image_size=32).backbone.save_weights(path)
    return path


def test_config_round_trip(vocabulary, mobilenet_weights):
    keras.utils.set_random_seed(1)
    # Every argument away from its default; the small-encoder ones (feature_size, filters,
    # spatial) are kept in the config whatever the backbone.
    model, clone = assert_config_round_trip(
        Captioner,
        dict(
            vocabulary=vocabulary,
            encoder="mobilenet_v3_small",
            encoder_weights=mobilenet_weights,
            image_size=32,
            feature_size=F,
            encoder_filters=(4, 4),
            cell="gru",
            num_layers=2,
            hidden_size=H,
            embedding_size=E,
            dropout=0.25,
            fused=False,
            seed=5,
            encoder_spatial="lines",
        ),
    )
    model.build()
    clone.build()
    clone.set_weights(model.get_weights())
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    tokens = token_batch(vocabulary)
    np.testing.assert_allclose(
        np.asarray(clone({"images": pixels, "tokens": tokens})),
        np.asarray(model({"images": pixels, "tokens": tokens})),
        rtol=1e-5,
    )
    # Through Keras' registry too (register_keras_serializable).
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(restored, Captioner) and restored.get_config() == model.get_config()
    # The small encoder's own arguments, read back from a Captioner that uses them.
    small, _ = assert_config_round_trip(
        Captioner,
        dict(
            vocabulary=vocabulary,
            encoder="small",
            encoder_weights="none",
            image_size=16,
            feature_size=F,
            encoder_filters=(4, 4),
            cell="gru",
            num_layers=2,
            hidden_size=H,
            embedding_size=E,
            dropout=0.25,
            fused=False,
            seed=5,
            encoder_spatial="lines",
        ),
        at_default=("encoder", "encoder_weights"),
    )
    assert small.encoder.backbone.get_config()["filters"] == [4, 4]
    assert small.encoder.backbone.spatial == "lines" and small.feature_size == F


def test_image_encoder_config_round_trip(mobilenet_weights):
    encoder, clone = assert_config_round_trip(
        ImageEncoder,
        dict(
            backbone="mobilenet_v3_small",
            encoder_weights=mobilenet_weights,
            image_size=32,
            feature_size=F,
            filters=(4, 4),
            spatial="lines",
        ),
    )
    assert clone.weights_key() == encoder.weights_key()  # the same file's weights
    small, _ = assert_config_round_trip(
        ImageEncoder,
        dict(
            backbone="small",
            encoder_weights="none",
            image_size=16,
            feature_size=F,
            filters=(4, 4),
            spatial="lines",
        ),
        at_default=("backbone", "encoder_weights"),
    )
    assert small.output_size == F and small.backbone.filters == (4, 4)


def test_small_cnn_config_round_trip():
    assert_config_round_trip(
        SmallCNN, dict(image_size=16, filters=(4, 6), feature_size=F, spatial="keypoints")
    )


def test_small_cnn_loads_configs_with_its_removed_arguments():
    """Configs saved before batch_norm, coordinates, unpooled and feature_norm were removed
    still load at the values they were always used at; other values described another network."""
    config = SmallCNN(image_size=16, filters=(4, 4), feature_size=F).get_config()
    old = dict(config, batch_norm=True, coordinates="none", unpooled=[], feature_norm="batch")
    assert SmallCNN.from_config(old).get_config() == config
    for name, value in [
        ("batch_norm", False),
        ("coordinates", "last"),
        ("unpooled", [1]),
        ("feature_norm", "layer"),
    ]:
        with pytest.raises(ValueError, match=name):
            SmallCNN.from_config(dict(old, **{name: value}))


@pytest.mark.parametrize("spatial", SPATIAL)
def test_small_cnn_spatial_summaries_round_trip(spatial):
    keras.utils.set_random_seed(3)
    cnn, clone = assert_config_round_trip(
        SmallCNN,
        dict(image_size=16, filters=(4, 4), feature_size=F, spatial=spatial),
        at_default=("spatial",),
    )
    cnn.build((None, 16, 16, 3))
    clone.build((None, 16, 16, 3))
    clone.set_weights(cnn.get_weights())
    assert clone.spatial == spatial
    # The final map is 4x4 with 4 channels; the global max plus the layout summary's cells.
    cells = {
        "flatten": 16,
        "lines": 8,
        "columns": 4,
        "keypoints": 2,
        "keypoints+lines": 10,
        "none": 0,
    }
    assert cnn.projection.kernel.shape == ((cells[spatial] + 1) * 4, F)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    np.testing.assert_allclose(np.asarray(clone(pixels)), np.asarray(cnn(pixels)), rtol=1e-6)


def test_small_cnn_reads_the_booleans_of_older_configs():
    assert SmallCNN(image_size=16, filters=(4, 4), spatial=True).spatial == "flatten"
    assert SmallCNN(image_size=16, filters=(4, 4), spatial=False).spatial == "none"
    with pytest.raises(ValueError, match="spatial must be one of"):
        SmallCNN(image_size=16, filters=(4, 4), spatial="grid")


def test_masked_loss_ignores_pad_positions(vocabulary):
    rng = np.random.default_rng(0)
    captions = np.array([[1, 5, 6, 7, 2, 0, 0], [1, 5, 2, 0, 0, 0, 0]], np.int32)
    inputs, targets = teacher_forcing(captions)
    assert inputs.shape == targets.shape == (2, 6)
    logits = rng.normal(0, 1, (2, 6, len(vocabulary))).astype("float32")
    loss = float(masked_loss(targets, logits))
    changed = logits.copy()
    pad_positions = targets == vocabulary.id(PAD)
    changed[pad_positions] = rng.normal(0, 50, changed[pad_positions].shape)
    assert float(masked_loss(targets, changed)) == pytest.approx(loss, rel=1e-6)
    changed[0, 0, targets[0, 0]] += 3  # a real position does count
    assert float(masked_loss(targets, changed)) != pytest.approx(loss, rel=1e-3)
    # The mean over real tokens only: 4 + 2 of them.
    total, count = masked_cross_entropy(targets, logits)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = ~pad_positions
    expected = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0][real]
    assert float(count) == 6
    assert float(total) == pytest.approx(expected.sum(), rel=1e-5)


def rigged_model(vocabulary, winner):
    """A model whose logits are dominated by the output bias: `winner` is the best allowed token."""
    model = tiny_model(vocabulary, "lstm")
    model.output_layer.kernel.assign(np.zeros(model.output_layer.kernel.shape, np.float32))
    bias = np.zeros(len(vocabulary), np.float32)
    bias[vocabulary.id(PAD)] = bias[vocabulary.id(START)] = 100  # never emitted, however likely
    bias[vocabulary.id(UNKNOWN)] = 90
    bias[vocabulary.id(winner)] = 50
    model.output_layer.bias.assign(bias)
    return model


def test_decoding_never_emits_pad_or_start_and_unk_only_if_allowed(vocabulary):
    model = rigged_model(vocabulary, END)
    assert caption_features(model, features(), vocabulary, max_length=6) == ["", ""]
    allowed = caption_features(model, features(), vocabulary, max_length=6, allow_unknown=True)
    assert allowed == [" ".join([UNKNOWN] * 6)] * 2  # cut at max_length
    model = rigged_model(vocabulary, "red")
    tokens, _, lengths = model.caption(features(), max_length=4)
    assert np.asarray(tokens).shape == (2, 5)
    assert list(np.asarray(lengths)) == [4, 4]
    sampled = caption_features(model, features(), vocabulary, max_length=4, temperature=1.0, seed=3)
    assert sampled == ["red red red red"] * 2
    for caption in sampled + allowed:
        for special in (PAD, START, END):
            assert special not in caption


def test_greedy_captions_of_pixels_run_from_start_to_end(vocabulary):
    # What a run directory's model does with the pixels of image files
    # (caption_model.RunDirectoryModel.caption_pixels): encode, then decode the features.
    model = tiny_model(vocabulary, "lstm")
    pixels = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    image_features = model.encode(pixels, training=False)
    captions, log_probs = decode_features(model, image_features, vocabulary, max_length=5)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    for caption in captions:
        words = caption.split()
        assert len(words) <= 5 and not set(words) & set(SPECIALS)
    batched = decode_features(model, image_features, vocabulary, max_length=5, batch_size=2)
    assert batched[0] == captions
    np.testing.assert_allclose(batched[1], log_probs, rtol=1e-5)
    # The captions are the ids `Captioner.caption` returns, up to each one's <end>.
    tokens, scores, lengths = model.caption(image_features, max_length=5)
    for row, length, caption in zip(np.asarray(tokens), np.asarray(lengths), captions):
        assert " ".join(vocabulary.decode(row[:length])) == caption
    np.testing.assert_allclose(scores, log_probs, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Encoders


def test_small_encoder_has_no_imagenet_weights():
    with pytest.raises(UsageError, match="`encoder_weights` none"):
        ImageEncoder("small", "imagenet", image_size=16, filters=(4,))
    with pytest.raises(UsageError, match="`encoder` must be one of"):
        ImageEncoder("vgg16")
    assert default_image_size("small") == 64 and default_image_size("inception_v3") == 299


def test_imagenet_download_failure_is_one_line(monkeypatch):
    # Keras wraps a failed download in a bare Exception; mocked, so the test never waits on a
    # network that might drop packets instead of refusing.
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/x_notop.h5: None -- "
            "[Errno -2] Name or service not known"
        )

    monkeypatch.setattr(file_utils, "get_file", no_network)
    with pytest.raises(UsageError) as error:
        ImageEncoder("mobilenet_v3_small", "imagenet", image_size=32)
    message = str(error.value)
    assert "\n" not in message
    assert "could not download the ImageNet weights of mobilenet_v3_small" in message
    assert "`encoder_weights` PATH" in message


def test_encoder_weights_from_a_local_file(tmp_path):
    keras.utils.set_random_seed(0)
    original = ImageEncoder("mobilenet_v3_small", "none", image_size=32)
    assert original.pretrained and not original.backbone.trainable
    assert original.output_size == 576
    path = str(tmp_path / "backbone.weights.h5")
    original.backbone.save_weights(path)
    keras.utils.set_random_seed(1)  # a different random initialisation ...
    loaded = ImageEncoder("mobilenet_v3_small", path, image_size=32)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    # ... replaced by the file's weights: the same features.
    np.testing.assert_allclose(
        np.asarray(loaded(pixels)), np.asarray(original(pixels)), rtol=1e-5, atol=1e-6
    )
    assert loaded.weights_key().startswith("file-") and original.weights_key().startswith("none-")
    again = ImageEncoder("mobilenet_v3_small", path, image_size=32)
    assert loaded.weights_key() == again.weights_key()

    with pytest.raises(UsageError, match="no such file"):
        ImageEncoder("mobilenet_v3_small", str(tmp_path / "missing.weights.h5"), image_size=32)
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not weights")
    with pytest.raises(UsageError, match="cannot be loaded") as error:
        ImageEncoder("mobilenet_v3_small", str(junk), image_size=32)
    assert "\n" not in str(error.value)


def test_fine_tuning_switch():
    encoder = ImageEncoder("mobilenet_v3_small", "none", image_size=32)
    assert encoder.trainable_variables == []
    encoder.set_backbone_trainable(True)
    assert len(encoder.trainable_variables) > 0
    small = ImageEncoder("small", "none", image_size=16, filters=(4,), feature_size=8)
    small.set_backbone_trainable(False)  # the small CNN is always trained
    assert len(small.trainable_variables) > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone, size, features",
    [("efficientnet_b0", 32, 1280), ("inception_v3", 75, 2048), ("resnet50", 32, 2048)],
)
def test_every_backbone_builds_with_its_preprocessing(backbone, size, features):
    encoder = ImageEncoder(backbone, "none", image_size=size)
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    assert tuple(encoder(pixels).shape) == (2, features) == (2, encoder.output_size)
    assert default_image_size(backbone) in (224, 299)


@pytest.mark.parametrize("backbone", ["small", "mobilenet_v3_small"])
def test_the_encoder_lists_every_batch_normalization_layer(backbone):
    """Mirrored training synchronises these layers' statistics, so none may be missed: the list
    is held against Keras' own walk over every nested layer."""
    encoder = ImageEncoder(backbone, "none", image_size=32, filters=(4, 8))
    listed = encoder.batch_normalization_layers()
    walked = [
        layer
        for layer in encoder._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert listed and {id(layer) for layer in listed} == {id(layer) for layer in walked}
