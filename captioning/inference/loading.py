"""A trained captioner behind one interface, whether it comes from a run directory or a SavedModel.

`load_caption_model(path)` returns an object with `image_size` and
`caption_pixels(pixels, options) -> (captions, log_probs)`. Both kinds decode the same way for
the same options (beam search from <start> to <end> in the graph), and both get the same pixels
(`captioning.datasets.images.load_image`: Pillow, EXIF orientation, any mode to RGB), so a run
directory and its export give the same captions. A SavedModel decodes with the default options
through its `caption` and `caption_n_best` signatures, and with any other (the decoding
controls, sampling) through `caption_with_options`; only `allow_unknown` needs the run
directory.
"""

import dataclasses
import io
import os

import numpy as np

from textgen import resources
from textgen._quiet_import import import_tensorflow_quietly
from textgen.errors import UsageError

# The model shipped with the project (data/models/), used when no --model is given.
BUNDLED_MODEL = str(resources.bundled_model("shapes"))


@dataclasses.dataclass
class DecodeOptions:
    beam_size: int = 3  # beams per image; 1 is greedy decoding
    max_length: int = 20  # most words per caption
    temperature: float = 0.0  # > 0 samples from the model instead of beam search
    top_k: int = 0  # with temperature: sample among the k most probable words (0: all)
    seed: int = 0  # with temperature: same seed, same captions
    allow_unknown: bool = False  # let captions contain <unk>
    length_normalization: float = (
        0.0  # beam search ranks by log_prob / length**alpha (0: plain log_prob)
    )
    n_best: int = 1  # > 1: the n best distinct beams of each image, best first
    # The beam controls (textgen.generation.beam_controls); the defaults change nothing.
    length_penalty: float = 0.0  # Wu et al.'s alpha: rank by log_prob / ((5 + length) / 6)**alpha
    block_repeat_ngrams: int = 0  # > 0: no n-gram of this many words twice in a caption
    no_repeat_words: bool = False  # no word twice but function words (tokens.REPEATABLE_WORDS)
    bad_endings: bool = False  # no caption ends on "a", "with", ... (tokens.BAD_ENDINGS)
    diverse_groups: int = 1  # > 1: diverse beam search with this many groups of beams
    diversity: float = 0.0  # with diverse_groups: nats a token costs per earlier group's use
    top_p: float = 1.0  # with temperature: sample from the nucleus of this probability

    def controls(self):
        """The beam controls as `Captioner.caption` takes them."""
        return {
            "length_penalty": self.length_penalty,
            "block_repeat_ngrams": self.block_repeat_ngrams,
            "no_repeat_words": self.no_repeat_words,
            "bad_endings": self.bad_endings,
            "diverse_groups": self.diverse_groups,
            "diversity": self.diversity,
        }

    def is_default_search(self):
        """Whether these options decode as a SavedModel's plain `caption` signature does."""
        plain = DecodeOptions(self.beam_size, self.max_length, n_best=self.n_best)
        return self == plain

    def check(self):
        if self.beam_size < 1:
            raise UsageError(f"`beam_size` must be >= 1, got {self.beam_size}")
        if self.max_length < 1:
            raise UsageError(f"`max_length` must be >= 1, got {self.max_length}")
        if self.temperature < 0:
            raise UsageError(
                f"`temperature` must be >= 0 (0 means beam search), got {self.temperature}"
            )
        if self.top_k < 0:
            raise UsageError(f"`top_k` must be >= 0 (0 means no cut), got {self.top_k}")
        if self.length_normalization < 0:
            raise UsageError(
                f"`length_normalization` must be >= 0, got {self.length_normalization}"
            )
        if self.n_best < 1:
            raise UsageError(f"`n_best` must be >= 1, got {self.n_best}")
        if self.n_best > self.beam_size:
            raise UsageError(
                f"`n_best` {self.n_best} is above `beam_size` {self.beam_size}: beam search keeps "
                f"only that many captions; pass `beam_size` {self.n_best} or more"
            )
        if self.n_best > 1 and self.temperature > 0:
            raise UsageError(
                f"`n_best` {self.n_best} ranks beams, so it needs beam search: drop `temperature`"
            )
        if self.length_penalty < 0:
            raise UsageError(f"`length_penalty` must be >= 0, got {self.length_penalty}")
        if self.length_penalty > 0 and self.length_normalization > 0:
            raise UsageError(
                "`length_penalty` and `length_normalization` both rank by length; pass one"
            )
        if self.block_repeat_ngrams < 0:
            raise UsageError(
                f"`block_repeat_ngrams` must be >= 0 (0: no blocking), got "
                f"{self.block_repeat_ngrams}"
            )
        if self.diverse_groups < 1 or self.beam_size % self.diverse_groups:
            raise UsageError(
                f"`diverse_groups` {self.diverse_groups} must divide `beam_size` "
                f"{self.beam_size} (each group keeps beam_size / diverse_groups beams)"
            )
        if self.diversity < 0:
            raise UsageError(f"`diversity` must be >= 0, got {self.diversity}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"`top_p` must be in (0, 1] (1: no cut), got {self.top_p}")


class RunDirectoryModel:
    """A captioning.train run directory: the Captioner with its checkpoint's weights."""

    def __init__(self, path):
        # Imported here: a SavedModel needs no Keras model code.
        from captioning.models.captioner import Captioner

        self.path = path
        self.model = Captioner.from_run_directory(path)
        self.image_size = self.model.image_size

    def caption_pixels(self, pixels, options):
        from captioning.inference.decoding import decode_features

        features = self.model.encode(np.asarray(pixels), training=False)
        return decode_features(
            self.model,
            features,
            self.model.vocabulary,
            options.max_length,
            options.beam_size,
            options.temperature,
            options.top_k,
            options.seed,
            options.allow_unknown,
            options.length_normalization,
            controls=options.controls(),
            top_p=options.top_p,
        )

    def n_best_pixels(self, pixels, options):
        """(captions [B][n_best], log_probs [B][n_best]), best first."""
        from captioning.inference.decoding import decode_n_best

        features = self.model.encode(np.asarray(pixels), training=False)
        return decode_n_best(
            self.model,
            features,
            self.model.vocabulary,
            options.max_length,
            options.beam_size,
            options.n_best,
            options.allow_unknown,
            options.length_normalization,
            controls=options.controls(),
        )


class SavedModelCaptioner:
    """A SavedModel written by captioning.export (or by training), used through its signature."""

    def __init__(self, path):
        from captioning.inference.saved_model import load_saved_model

        self.path = path
        self.loaded, config = load_saved_model(path)  # a damaged one: UsageError naming the file
        self.image_size = int(config["image_size"])
        self.signature = self.loaded.signatures["caption"]

    def _check_options(self, options):
        if options.allow_unknown:
            raise UsageError(
                "--allow-unk needs a run directory as `model`; a SavedModel never emits <unk>"
            )
        if not options.is_default_search() and "caption_with_options" not in self.loaded.signatures:
            raise UsageError(
                f"{self.path} was exported before the caption_with_options signature, which "
                "takes the decoding controls, existed; export it again with `python -m "
                "captioning.export RUN_DIR OUT_DIR` or pass the run directory as `model`"
            )

    def _with_options(self, pixels, options):
        """(captions [B][n], log_probs [B][n]) from the caption_with_options signature."""
        import tensorflow as tf

        from captioning.inference.saved_model import OPTION_INPUTS

        out = self.loaded.signatures["caption_with_options"](
            image_bytes=tf.constant(self._encoded(pixels)),
            **{
                name: tf.constant(getattr(options, name), dtype)
                for name, dtype in OPTION_INPUTS.items()
            },
        )
        return (
            [[c.decode("utf-8") for c in row] for row in out["captions"].numpy()],
            [[float(x) for x in row] for row in out["log_probs"].numpy()],
        )

    @staticmethod
    def _encoded(pixels):
        from PIL import Image

        encoded = []
        for image in np.asarray(pixels):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG")  # lossless: the model sees these pixels
            encoded.append(buffer.getvalue())
        return encoded

    def caption_pixels(self, pixels, options):
        import_tensorflow_quietly()
        import tensorflow as tf

        self._check_options(options)
        if not options.is_default_search():
            captions, log_probs = self._with_options(pixels, options)
            return [row[0] for row in captions], [row[0] for row in log_probs]
        encoded = self._encoded(pixels)
        out = self.signature(
            image_bytes=tf.constant(encoded),
            beam_size=tf.constant(options.beam_size, tf.int32),
            max_length=tf.constant(options.max_length, tf.int32),
        )
        return (
            [c.decode("utf-8") for c in out["caption"].numpy()],
            [float(x) for x in out["log_prob"].numpy()],
        )

    def n_best_pixels(self, pixels, options):
        import_tensorflow_quietly()
        import tensorflow as tf

        self._check_options(options)
        if not options.is_default_search():
            return self._with_options(pixels, options)
        if "caption_n_best" not in self.loaded.signatures:
            raise UsageError(
                f"{self.path} was exported before the caption_n_best signature existed; export "
                "it again with `python -m captioning.export RUN_DIR OUT_DIR` or pass the run "
                "directory as `model`"
            )
        out = self.loaded.signatures["caption_n_best"](
            image_bytes=tf.constant(self._encoded(pixels)),
            beam_size=tf.constant(options.beam_size, tf.int32),
            max_length=tf.constant(options.max_length, tf.int32),
            n_best=tf.constant(options.n_best, tf.int32),
        )
        return (
            [[c.decode("utf-8") for c in row] for row in out["captions"].numpy()],
            [[float(x) for x in row] for row in out["log_probs"].numpy()],
        )


def load_caption_model(path=None):
    """The model at `path` (a run directory or a SavedModel directory; None: the bundled one)."""
    if path is None:
        path = BUNDLED_MODEL
        if not os.path.isdir(path):
            raise UsageError(
                f"no `model` given and the bundled model {path} is missing (it comes "
                "with a git checkout of the project); pass `model` RUN_DIR_OR_SAVEDMODEL"
            )
    if not os.path.isdir(path):
        raise UsageError(
            f"`model` {path}: no such directory; pass a captioning.train run "
            "directory or a SavedModel from captioning.export"
        )
    if os.path.exists(os.path.join(path, "saved_model.pb")):  # a damaged one too
        return SavedModelCaptioner(path)
    return RunDirectoryModel(path)


@dataclasses.dataclass
class CaptionResult:
    file: str
    caption: str
    log_prob: float
    # --n-best > 1: every beam kept, best first, as {"caption": ..., "log_prob": ...}
    n_best: list | None = None


def caption_batch(model, paths, pixels, options):
    """[CaptionResult] for one batch: `pixels` uint8 [B, S, S, 3] of the files `paths`."""
    if options.n_best > 1:
        captions, log_probs = model.n_best_pixels(pixels, options)
        return [
            CaptionResult(
                os.fspath(p), c[0], s[0], [{"caption": ci, "log_prob": si} for ci, si in zip(c, s)]
            )
            for p, c, s in zip(paths, captions, log_probs)
        ]
    captions, log_probs = model.caption_pixels(pixels, options)
    return [CaptionResult(os.fspath(p), c, s) for p, c, s in zip(paths, captions, log_probs)]


def caption_files(paths, model, options, batch_size=32, on_error=None, workers=0, on_progress=None):
    """Captions for image files, `batch_size` at a time. A file that cannot be used (missing, a
    directory, corrupt, not an image, unsupported, too large) is reported to `on_error(ImageError)`
    and left out; the others are still captioned. Returns [CaptionResult] in the order given.

    The files are decoded on `workers` threads (0: min(4, the CPU count)), the next batch while
    the model captions this one (`image_pipeline.decoded_images`), so that a folder of JPEGs is
    captioned at nearly the model's own rate. `on_progress(count)` hears of every image done,
    captioned or reported."""
    from captioning.datasets.images import ImageError
    from captioning.inference.image_pipeline import decoded_images

    options.check()
    if batch_size < 1:
        raise UsageError(f"`batch_size` must be >= 1, got {batch_size}")
    results = []
    batch_paths, batch_pixels = [], []

    def flush():
        if batch_paths:
            results.extend(caption_batch(model, batch_paths, np.stack(batch_pixels), options))
            if on_progress is not None:
                on_progress(len(batch_paths))
            batch_paths.clear()
            batch_pixels.clear()

    # Two batches ahead: the whole next batch is decoding while the model runs, with slack for
    # the bad files that a batch skips.
    for path, pixels in decoded_images(paths, model.image_size, workers, 2 * batch_size):
        if isinstance(pixels, ImageError):
            if on_error is None:
                raise pixels
            on_error(pixels)
            if on_progress is not None:
                on_progress(1)
            continue
        batch_paths.append(path)
        batch_pixels.append(pixels)
        if len(batch_paths) == batch_size:
            flush()
    flush()
    return results
