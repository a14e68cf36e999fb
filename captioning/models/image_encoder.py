"""ImageEncoder: pixels -> one feature vector per image, from the small CNN or a keras.applications
backbone (include_top=False, pooling="avg"), each with its own preprocess_input and input size.

Weights (`encoder_weights`):
    "none"      random initialisation (the only sensible choice for `small`, which is trained
                end to end with the decoder);
    "imagenet"  Keras' normal download into ~/.keras/models; when the download fails (no
                internet) the error is one line telling the user to pass a local file instead;
    PATH        a local weights file: a `.weights.h5` saved by `save_weights`, or the `_notop.h5`
                file Keras itself downloads.
"""

import hashlib
import os

import keras
import numpy as np
import tensorflow as tf

from captioning.models.small_cnn import SmallCNN, spatial_name
from textgen.errors import UsageError


def _application(name):
    apps = keras.applications
    return {
        "mobilenet_v3_small": (apps.MobileNetV3Small, apps.mobilenet_v3.preprocess_input, 224),
        "efficientnet_b0": (apps.EfficientNetB0, apps.efficientnet.preprocess_input, 224),
        "inception_v3": (apps.InceptionV3, apps.inception_v3.preprocess_input, 299),
        "resnet50": (apps.ResNet50, apps.resnet50.preprocess_input, 224),
    }[name]


PRETRAINED = ("mobilenet_v3_small", "efficientnet_b0", "inception_v3", "resnet50")
BACKBONES = ("small",) + PRETRAINED
SMALL_IMAGE_SIZE = 64


def default_image_size(backbone):
    """The input size a backbone was trained at (small: the shapes generator's default, 64)."""
    return SMALL_IMAGE_SIZE if backbone == "small" else _application(backbone)[2]


def check_backbone(backbone):
    if backbone not in BACKBONES:
        raise UsageError(f"`encoder` must be one of {', '.join(BACKBONES)}, got {backbone!r}")


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


@keras.saving.register_keras_serializable(package="captioning")
class ImageEncoder(keras.layers.Layer):
    """uint8 pixels [batch, image_size, image_size, 3] -> features [batch, output_size].

    Args:
        backbone: "small" or one of PRETRAINED (keras.applications names, snake case).
        encoder_weights: "none", "imagenet" or the path of a local weights file.
        image_size: input width and height; None picks the backbone's own (224, 299 for
            inception_v3, 64 for small).
        feature_size: small only: length of the feature vector (a pretrained backbone's is
            fixed: 576, 1280, 2048, 2048).
        filters: small only: channels of its convolution blocks.

    Random initialisation draws from Keras' global seed (`keras.utils.set_random_seed`), which
    the trainer sets before building the model.
    """

    def __init__(
        self,
        backbone="small",
        encoder_weights="none",
        image_size=None,
        feature_size=256,
        filters=(32, 64, 64, 128),
        spatial="flatten",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_backbone(backbone)
        self.backbone_name = backbone
        self.encoder_weights = encoder_weights
        self.image_size = int(image_size or default_image_size(backbone))
        self.feature_size = int(feature_size)
        self.filters = tuple(int(f) for f in filters)
        self.spatial = spatial_name(spatial)
        if backbone == "small":
            if encoder_weights == "imagenet":
                raise UsageError(
                    "`encoder` small has no ImageNet weights; pass `encoder_weights` "
                    "none (trained from scratch) or the PATH of saved small-encoder "
                    "weights"
                )
            self.backbone = SmallCNN(
                self.image_size,
                self.filters,
                self.feature_size,
                spatial=self.spatial,
                name="small_cnn",
            )
            self.backbone.build((None, self.image_size, self.image_size, 3))
            self._preprocess = None
        else:
            self.backbone = self._pretrained(backbone, encoder_weights)
            self._preprocess = _application(backbone)[1]
            self.backbone.trainable = False  # frozen until fine-tuning (see set_backbone_trainable)
        if encoder_weights not in ("none", "imagenet"):
            self._load_file(encoder_weights)

    def _pretrained(self, backbone, weights):
        constructor, _, _ = _application(backbone)
        shape = (self.image_size, self.image_size, 3)
        if weights != "imagenet":
            try:
                return constructor(
                    include_top=False, pooling="avg", weights=None, input_shape=shape
                )
            except ValueError as error:  # e.g. an input size below the backbone's minimum
                raise UsageError(
                    f"`encoder` {backbone} cannot take `image_size` "
                    f"{self.image_size}: {_one_line(error)}"
                ) from None
        try:
            return constructor(
                include_top=False, pooling="avg", weights="imagenet", input_shape=shape
            )
        except ValueError as error:
            raise UsageError(
                f"`encoder` {backbone} cannot take `image_size` {self.image_size}: "
                f"{_one_line(error)}"
            ) from None
        except Exception as error:  # Keras' get_file wraps URL/HTTP errors in a bare Exception
            raise UsageError(
                f"could not download the ImageNet weights of {backbone} "
                f"({_one_line(error)}); pass a local weights file with "
                "`encoder_weights` PATH"
            ) from None

    def _load_file(self, path):
        if not os.path.isfile(path):
            raise UsageError(
                f"`encoder_weights` {path}: no such file; pass none, imagenet or the "
                "path of a weights file"
            )
        try:
            self.backbone.load_weights(path)
        except Exception as error:  # h5py, Keras and shape errors all mean "not these weights"
            raise UsageError(
                f"`encoder_weights` {path} cannot be loaded into `encoder` "
                f"{self.backbone_name} at `image_size` {self.image_size} "
                f"({_one_line(error)[:300]})"
            ) from None

    @property
    def pretrained(self):
        return self.backbone_name != "small"

    @property
    def output_size(self):
        if not self.pretrained:
            return self.feature_size
        return int(self.backbone.output_shape[-1])

    def set_backbone_trainable(self, trainable):
        """Fine-tuning switch for pretrained backbones (the small CNN is always trained)."""
        self.backbone.trainable = bool(trainable) or not self.pretrained

    def batch_normalization_layers(self):
        """The BatchNormalization layers of the backbone (a keras.applications model is a flat
        functional model, so its `layers` list them all)."""
        if not self.pretrained:
            return self.backbone.batch_normalization_layers()
        return [
            layer
            for layer in self.backbone.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        ]

    def weights_key(self):
        """Names the weights the features come from, for the feature cache: imagenet, the
        file's hash, or (random weights) a hash of the initial values."""
        if self.encoder_weights == "imagenet":
            return "imagenet"
        if self.encoder_weights != "none":
            return "file-" + file_sha256(self.encoder_weights)[:16]
        digest = hashlib.sha256()
        for variable in self.backbone.weights:
            digest.update(
                np.ascontiguousarray(keras.ops.convert_to_numpy(variable.value)).tobytes()
            )
        return "none-" + digest.hexdigest()[:16]

    def build(self, input_shape=None):
        self.built = True

    def call(self, pixels, training=False):
        if not self.pretrained:
            return self.backbone(pixels, training=training)
        x = self._preprocess(tf.cast(pixels, "float32"))
        # BatchNorm statistics stay frozen even while fine-tuning, as Keras' transfer-learning
        # guide recommends for small batches.
        return self.backbone(x, training=False)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=self.backbone_name,
            encoder_weights=self.encoder_weights,
            image_size=self.image_size,
            feature_size=self.feature_size,
            filters=list(self.filters),
            spatial=self.spatial,
        )
        return config
