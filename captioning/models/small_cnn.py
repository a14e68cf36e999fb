"""SmallCNN: a compact convolutional encoder, trained end to end with the caption decoder."""

import keras
import tensorflow as tf

# How the final feature map's layout reaches the feature vector (see SmallCNN).
SPATIAL = ("lines", "flatten", "columns", "keypoints", "keypoints+lines", "none")


# Arguments of earlier versions, with the only values they were ever used at (see from_config).
REMOVED_ARGUMENTS = {
    "batch_norm": True,
    "coordinates": "none",
    "unpooled": [],
    "feature_norm": "batch",
}


def spatial_name(spatial):
    """The name of a `spatial` choice; True and False are what configs saved before the names
    say."""
    return {True: "flatten", False: "none"}.get(spatial, spatial)


@keras.saving.register_keras_serializable(package="captioning")
class SmallCNN(keras.layers.Layer):
    """uint8 (or 0..255 float) pixels [batch, size, size, 3] -> features [batch, feature_size].

    A few blocks of 3x3 convolution + batch normalisation + ReLU + 2x2 max-pooling. The final
    feature map is read two ways, concatenated: global max-pooling (WHAT is in the image: the
    shared detectors learn shapes and colours several times faster through this path) and a
    summary of its layout (WHERE: "left of", "above" and left-to-right order need positions),
    chosen by `spatial`:
    "flatten": every cell of the map; "lines": the maximum over each row and over each column
    (half the cells' numbers at 4x4, and an object's column reads the same whatever its row,
    so fewer examples teach it, and it generalised better on the shapes benchmark:
    bench/README.md); "columns": over each column only;
    "keypoints": every channel's expected x and y (a spatial soft-argmax); "keypoints+lines";
    "none": global max-pooling alone. A dense
    layer projects them to `feature_size`, and batch normalisation of that vector gives v: every
    feature has zero mean and unit variance over the images, so each one has to vary from image
    to image. With layer normalisation there (each image's vector at unit scale, the earlier
    choice), the CNN learnt what the first words need (how many objects, their sizes) and then
    stalled: the decoder grew Wih until most of the first step's gate inputs saturated, and
    saturated gates pass almost no gradient back to v, so v never learnt the colours (the
    measurements are in bench/README.md). Pixels are scaled to [-1, 1] inside.

    Batch normalisation uses momentum 0.9 rather than Keras' 0.99: with 0.99 the moving averages
    that inference uses lag the fast-changing early weights by hundreds of steps, and a model
    that trains well captions badly for the first few minutes.

    Args:
        image_size: width and height of the input, in pixels; must be divisible by
            2 ** len(filters).
        filters: output channels of each convolution block.
        feature_size: length of the feature vector.
        spatial: how the final map's layout reaches the feature vector (see above; True and
            False, from configs saved before the names, mean "flatten" and "none").

    Configs saved by earlier versions may also hold `batch_norm`, `coordinates`, `unpooled` and
    `feature_norm`, arguments that were never used with other than their defaults; `from_config`
    drops them at those values and refuses the others, which described another network.
    """

    def __init__(
        self,
        image_size=64,
        filters=(32, 64, 64, 128),
        feature_size=256,
        spatial="flatten",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.filters = tuple(int(f) for f in filters)
        self.feature_size = int(feature_size)
        self.spatial = spatial_name(spatial)
        if self.spatial not in SPATIAL:
            raise ValueError(f"spatial must be one of {', '.join(SPATIAL)}, got {spatial!r}")
        if self.image_size % (2 ** len(self.filters)):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{len(self.filters)}")
        # The attributes' order is the variables' order, which positional checkpoints rely on.
        self.convolutions = [
            keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv_{i}")
            for i, f in enumerate(self.filters)
        ]
        self.norms = [
            keras.layers.BatchNormalization(momentum=0.9, name=f"norm_{i}")
            for i in range(len(self.filters))
        ]
        self.pools = [
            keras.layers.MaxPooling2D(2, name=f"pool_{i}") for i in range(len(self.filters))
        ]
        self.global_pool = keras.layers.GlobalMaxPooling2D(name="global_max")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.projection = keras.layers.Dense(self.feature_size, name="features")
        self.normalization = keras.layers.BatchNormalization(momentum=0.9, name="feature_norm")

    def build(self, input_shape=None):
        size, channels = self.image_size, 3
        for conv, norm in zip(self.convolutions, self.norms):
            conv.build((None, size, size, channels))
            norm.build((None, size, size, conv.filters))
            size, channels = size // 2, conv.filters
        cells = {
            "flatten": size * size,
            "none": 0,
            "columns": size,
            "lines": 2 * size,
            "keypoints": 2,
            "keypoints+lines": 2 + 2 * size,
        }[self.spatial]
        self.projection.build((None, (cells + 1) * channels))
        self.normalization.build((None, self.feature_size))
        self.built = True

    def call(self, pixels, training=False):
        x = tf.cast(pixels, self.compute_dtype) / 127.5 - 1.0
        for conv, norm, pool in zip(self.convolutions, self.norms, self.pools):
            x = pool(tf.nn.relu(norm(conv(x), training=training)))
        parts = [self.global_pool(x)]
        if self.spatial == "flatten":
            parts.append(self.flatten(x))
        elif self.spatial == "columns":
            parts.append(self.flatten(tf.reduce_max(x, axis=1)))
        elif self.spatial == "lines":
            parts += self._lines(x)
        elif self.spatial in ("keypoints", "keypoints+lines"):
            parts += self._keypoints(x)
            if self.spatial == "keypoints+lines":
                parts += self._lines(x)
        x = tf.concat(parts, axis=-1)
        return self.normalization(self.projection(x), training=training)

    def _lines(self, x):
        """The maximum over each column's cells, then over each row's."""
        return [self.flatten(tf.reduce_max(x, axis=1)), self.flatten(tf.reduce_max(x, axis=2))]

    @staticmethod
    def _keypoints(x):
        """Spatial soft-argmax: for every channel, the expected x and y of its activation."""
        shape = tf.shape(x)
        flat = tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3]])
        weights = tf.nn.softmax(flat, axis=1)
        grid = tf.reshape(SmallCNN._coordinate_channels(x[:1, :, :, :1])[0], [-1, 2])  # [HW, 2]
        expected = tf.einsum("bpc,pk->bkc", weights, grid)
        return [expected[:, 0], expected[:, 1]]

    @staticmethod
    def _coordinate_channels(x):
        """[B, H, W, 2]: x and y of every position, from -1 to 1."""
        shape = tf.shape(x)
        ys = tf.linspace(-1.0, 1.0, shape[1])
        xs = tf.linspace(-1.0, 1.0, shape[2])
        grid = tf.stack(tf.meshgrid(xs, ys), axis=-1)  # [H, W, 2]: (x, y)
        return tf.tile(tf.cast(grid, x.dtype)[None], [shape[0], 1, 1, 1])

    def batch_normalization_layers(self):
        return [*self.norms, self.normalization]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            filters=list(self.filters),
            feature_size=self.feature_size,
            spatial=self.spatial,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name, value in REMOVED_ARGUMENTS.items():
            if name in config:
                saved = config.pop(name)
                if (list(saved) if isinstance(saved, (list, tuple)) else saved) != value:
                    raise ValueError(
                        f"this SmallCNN config has {name}={saved!r}, an argument that SmallCNN no "
                        f"longer takes; only its old default, {value!r}, can still be loaded"
                    )
        return super().from_config(config)
