"""The tf.data input pipeline of captioning.train.

Images are decoded by `captioning.datasets.images.load_image` (Pillow), called through
`tf.numpy_function`
inside a `tf.data` map with `num_parallel_calls=AUTOTUNE`, rather than by `tf.io.decode_image`:
Pillow applies EXIF orientation, converts every mode (palette, alpha on white, 16-bit, CMYK) to
RGB, enforces the decompression-bomb limit and names each bad file in one line, and its decoders
release the GIL, so the map's threads decode in parallel.

Every image is decoded once, at the start (`decode_images`), in parallel batches:
- an image that fails to decode is skipped and named (one line each), as the data layer does;
- for a frozen pretrained backbone the batches go straight through the backbone and only the
  pooled features are kept (and cached on disk, `FeatureCache`): no epoch reads an image again;
- for the small encoder (and fine-tuning) the pixels are kept in memory as uint8 when they fit
  in --image-memory-mb (5,000 64x64 images: 61 MB), so no later epoch reads an image either;
  larger data sets are decoded again every epoch by the same parallel map (`FileSource`).

Batches: a batch holds `batch_size` images and, for each, `captions_per_image` of its encoded
captions (neuraltalk2's seq_per_img: the encoder runs once per image). The order of an epoch's
images and the captions chosen are drawn from `numpy.random.default_rng([seed, epoch])`, so they
depend only on the seed and the epoch: a run resumed in the middle of an epoch slices the same
order at the step it stopped at and sees exactly the batches the uninterrupted run saw.
"""

import weakref

import numpy as np
import tensorflow as tf

from captioning.coco_data import caption_rows
from captioning.datasets import images as image_files
from captioning.datasets.tokens import encode_captions
from textgen.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE


class CaptionSet:
    """The images of one split and their captions, encoded.

    Attributes:
        records: the `CaptionRecord`s, one per image.
        captions: int32 [num_captions, max_length + 2] (<start> ... <end> <pad>...).
        offsets: image i's captions are rows offsets[i]:offsets[i + 1] of `captions`.
        first_captions: batches draw from each image's first this many captions (0: all); the
            records keep every caption, for scoring against all the references.
    """

    def __init__(self, records, vocabulary, max_length, first_captions=0):
        self.records = list(records)
        self.vocabulary = vocabulary
        self.max_length = max_length
        self.first_captions = first_captions
        _, token_lists = caption_rows(self.records)
        self.captions = encode_captions(token_lists, vocabulary, max_length)
        counts = np.array([len(r.captions) for r in self.records], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self):
        return len(self.records)

    @property
    def counts(self):
        return np.diff(self.offsets)

    def subset(self, indices):
        return CaptionSet(
            [self.records[i] for i in indices],
            self.vocabulary,
            self.max_length,
            self.first_captions,
        )

    def choose_captions(self, rng, per_image):
        """int64 [num_images, per_image]: rows of `captions`. Each image's captions (its first
        `first_captions`, if set) in a random order, the first `per_image` of them; an image with
        fewer repeats that order."""
        counts = (
            np.minimum(self.counts, self.first_captions) if self.first_captions else self.counts
        )
        keys = rng.random((len(self), int(counts.max())))
        keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = np.inf
        shuffled = np.argsort(keys, axis=1, kind="stable")
        columns = np.arange(per_image)[None, :] % counts[:, None]
        return self.offsets[:-1, None] + np.take_along_axis(shuffled, columns, axis=1)

    def epoch_plan(self, seed, epoch, per_image):
        """(image order [N], caption rows [N, per_image]) of one training epoch."""
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self))
        return order, self.choose_captions(rng, per_image)[order]

    def fixed_plan(self, seed, per_image):
        """In order, with captions chosen once for all (validation)."""
        rng = np.random.default_rng([seed, 1 << 30])
        return np.arange(len(self)), self.choose_captions(rng, per_image)


def decode_images(paths, image_size, batch_size=64, errors=None):
    """Decodes every image once, in parallel (tf.data map, AUTOTUNE threads, order kept).

    Yields (indices [n], uint8 pixels [n, S, S, 3], ok [n] bool) batches; a failed image has
    ok False and zero pixels, and its ImageError is put in `errors[index]` when given.
    """
    paths = list(paths)
    size = int(image_size)

    def load(index):
        index = int(index)
        try:
            return image_files.load_image(paths[index], size), np.bool_(True)
        except image_files.ImageError as error:
            if errors is not None:
                errors[index] = error
            return np.zeros((size, size, 3), np.uint8), np.bool_(False)

    def load_op(index):
        pixels, ok = tf.numpy_function(load, [index], (tf.uint8, tf.bool))
        pixels.set_shape((size, size, 3))
        ok.set_shape(())
        return pixels, ok

    dataset = (
        tf.data.Dataset.range(len(paths))
        .map(load_op, num_parallel_calls=AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(2)
    )
    start = 0
    for pixels, ok in dataset:
        n = int(ok.shape[0])
        yield np.arange(start, start + n), pixels.numpy(), ok.numpy()
        start += n


class ArraySource:
    """Per-image inputs held in memory: uint8 pixels [N, S, S, 3] or float32 features [N, F]."""

    def __init__(self, array):
        self.array = array

    @property
    def kind(self):
        return "features" if self.array.ndim == 2 else "pixels"

    def batches(self, order, caption_rows, captions, batch_size):
        array = self.array

        def gather(indices, rows):
            return array[indices], captions[rows]

        def gather_op(indices, rows):
            inputs, batch_captions = tf.numpy_function(
                gather, [indices, rows], (tf.as_dtype(array.dtype), tf.int32)
            )
            inputs.set_shape((None,) + array.shape[1:])
            batch_captions.set_shape((None, rows.shape[1], captions.shape[1]))
            return inputs, batch_captions

        return (
            tf.data.Dataset.from_tensor_slices((order, caption_rows))
            .batch(batch_size)
            .map(gather_op, num_parallel_calls=AUTOTUNE, deterministic=True)
            .prefetch(2)
        )


class FileSource:
    """Pixels decoded from the files every epoch (data sets too large for memory)."""

    kind = "pixels"

    def __init__(self, paths, image_size):
        self.paths = list(paths)
        self.image_size = int(image_size)

    def batches(self, order, caption_rows, captions, batch_size):
        paths, size = self.paths, self.image_size

        def load(index, rows):
            # The file decoded at the start; one that fails now was changed during the run.
            return image_files.load_image(paths[int(index)], size), captions[rows]

        def load_op(index, rows):
            pixels, image_captions = tf.numpy_function(load, [index, rows], (tf.uint8, tf.int32))
            pixels.set_shape((size, size, 3))
            image_captions.set_shape((rows.shape[0], captions.shape[1]))
            return pixels, image_captions

        return (
            tf.data.Dataset.from_tensor_slices((order, caption_rows))
            .map(load_op, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(batch_size)
            .prefetch(2)
        )


# ---- what training reads: pixels decoded once, or a frozen backbone's features ----

DECODE_BATCH = 64  # images per batch of the one-time decoding / feature pass


def hold_out(records, fraction, seed):
    """(train, validation): a seeded random `fraction` of the images (at least one) held out."""
    if len(records) < 2:
        raise UsageError(
            "only one usable training image: too few to hold out validation images; "
            "pass `val_annotations`"
        )
    count = min(len(records) - 1, max(1, round(fraction * len(records))))
    order = np.random.default_rng([seed, 7]).permutation(len(records))
    held = set(order[:count].tolist())
    return (
        [r for i, r in enumerate(records) if i not in held],
        [r for i, r in enumerate(records) if i in held],
    )


def report_failures(errors, total, what, log):
    """Logs each image that failed to decode; UsageError if none of them could be."""
    for index in sorted(errors):
        log(f"skipped image {errors[index]}")
    if errors:
        log(f"{what}: skipped {len(errors)} of {total} images that failed to decode (named above)")
    if errors and len(errors) == total:
        raise UsageError(
            f"{what}: none of the {total} images could be decoded (see the lines above)"
        )


def pixel_source(caption_set, image_size, memory_mb, what, log, bar):
    """(source, indices of the images kept): every image decoded once into memory when they fit
    in `memory_mb`, else a FileSource that decodes them every epoch. `bar(total, what)` is a
    progress bar."""
    total, size = len(caption_set), image_size
    in_memory = total * size * size * 3 <= memory_mb * 2**20
    pixels = np.zeros((total, size, size, 3), np.uint8) if in_memory else None
    ok = np.zeros(total, bool)
    errors = {}
    paths = [r.path for r in caption_set.records]
    with bar(total, f"decoding {what} images") as progress:
        for indices, batch, batch_ok in decode_images(paths, size, DECODE_BATCH, errors):
            if in_memory:
                pixels[indices] = batch
            ok[indices] = batch_ok
            progress.update(len(indices))
    report_failures(errors, total, what, log)
    kept = np.flatnonzero(ok)
    if not in_memory:
        log(
            f"{what}: {total} images of {size}x{size} exceed `image_memory_mb` {memory_mb}; they "
            "are decoded again every epoch"
        )
        return FileSource([paths[i] for i in kept], size), kept
    return ArraySource(pixels if len(kept) == total else pixels[kept]), kept


def feature_source(caption_set, model, cache, what, log, bar):
    """(source, indices of the images kept): the frozen backbone's feature vector of every
    image, from `cache` (a FeatureCache) or computed once and cached."""
    total, size = len(caption_set), model.feature_size
    features = np.zeros((total, size), np.float32)
    have = np.zeros(total, bool)
    for i, record in enumerate(caption_set.records):
        vector = cache.load(record.image_id)
        if vector is not None and vector.shape == (size,):
            features[i], have[i] = vector, True
    missing = np.flatnonzero(~have)
    if len(missing):
        log(
            f"{what}: computing {model.encoder.backbone_name} features of {len(missing)} images "
            f"({total - len(missing)} cached) into {cache.directory}"
        )
        encode = tf.function(
            lambda pixels: model.encode(pixels, training=False),
            reduce_retracing=True,
            autograph=False,
        )
        errors = {}
        paths = [caption_set.records[i].path for i in missing]
        with bar(len(missing), f"{what} features") as progress:
            for indices, pixels, ok in decode_images(paths, model.image_size, DECODE_BATCH, errors):
                vectors = encode(pixels).numpy()
                for j, k in enumerate(indices):
                    if ok[j]:
                        i = missing[k]
                        features[i], have[i] = vectors[j], True
                        cache.save(caption_set.records[i].image_id, vectors[j])
                progress.update(len(indices))
        report_failures({missing[k]: e for k, e in errors.items()}, total, what, log)
    kept = np.flatnonzero(have)
    return ArraySource(features if len(kept) == total else features[kept]), kept


def source_features(model, source, count):
    """Encoder features of the first `count` images of a source (for greedy captions)."""
    if source.kind == "features":
        return source.array[:count]
    if isinstance(source, ArraySource):
        pixels = source.array[:count]
    else:
        pixels = np.zeros((count, model.image_size, model.image_size, 3), np.uint8)
        for indices, batch, _ in decode_images(source.paths[:count], model.image_size):
            pixels[indices] = batch
    encode = inference_encoder(model)
    return np.concatenate([encode(pixels[i : i + 256]).numpy() for i in range(0, count, 256)])


# One traced inference encoder per model: a new tf.function at every evaluation would trace
# again each time (and TensorFlow warns about it from the fifth).
_ENCODERS = weakref.WeakKeyDictionary()


def inference_encoder(model):
    """model.encode(x, training=False) as a tf.function, traced once per model and shape."""
    if model not in _ENCODERS:
        owner = weakref.ref(model)  # the cache must not keep its own key alive
        _ENCODERS[model] = tf.function(
            lambda x: owner().encode(x, training=False),
            reduce_retracing=True,
            autograph=False,
        )
    return _ENCODERS[model]
