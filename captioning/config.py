"""Captioning training configuration: plain typed values with defaults, one comment each.

The model defaults are tuned for the synthetic shapes data (64x64 images, `small` encoder) so that
15 minutes on a 2-core CPU reach the quality target of bench/caption_quality.py.
"""

import dataclasses

from captioning.image_encoder import BACKBONES, check_backbone, default_image_size
from captioning.small_cnn import SPATIAL
from textgen.config import validate_shared
from textgen.errors import UsageError


@dataclasses.dataclass
class CaptionTrainConfig:
    annotations: str = ""               # training captions, COCO format (required)
    images: str = ""                    # directory the training file names are relative to (required)
    val_annotations: str = ""           # validation captions (COCO); empty: hold out --val-fraction of the images
    val_images: str = ""                # directory of the validation images (empty: --images)
    val_fraction: float = 0.05          # without --val-annotations: share of training images held out
    encoder: str = "small"              # small | mobilenet_v3_small | efficientnet_b0 | inception_v3 | resnet50
    encoder_weights: str = "auto"       # none | imagenet | PATH of a weights file (auto: none for small, else imagenet)
    image_size: int = 0                 # image side in pixels (0: the encoder's own: small 64, inception_v3 299, others 224)
    feature_size: int = 256             # small encoder: length of the image feature vector
    encoder_filters: str = "24,48,64,96"  # small encoder: channels of its conv blocks, comma separated
    encoder_spatial: str = "lines"      # small encoder: how its final map's layout reaches v: lines | flatten | columns | keypoints | keypoints+lines | none
    fine_tune_after: int = -1           # pretrained encoders: unfreeze after this many epochs (-1: never)
    encoder_learning_rate: float = 1e-5  # learning rate of a fine-tuned backbone
    feature_cache: str = ""             # directory of cached backbone features (empty: OUT/feature_cache)
    cell: str = "lstm"                  # lstm | gru | rnn
    num_layers: int = 1                 # stacked recurrent layers
    hidden_size: int = 256              # units per recurrent layer
    embedding_size: int = 64            # word embedding size
    dropout: float = 0.0                # dropout on each recurrent layer's output
    batch_size: int = 32                # images per batch (the global batch, over all replicas)
    captions_per_image: int = 2         # captions trained per image per batch (neuraltalk2's seq_per_img; 2 beat 5 in 15 minutes)
    first_captions: int = 0             # train (and measure the validation loss) on each image's first N captions, in file order (0: all)
    epochs: int = 30                    # passes over the training images
    max_minutes: float = 0.0            # stop, after a checkpoint, once training has run this long (0: no limit)
    max_steps: int = 0                  # stop after this many training steps in all (0: no limit)
    learning_rate: float = 2e-3         # Adam learning rate of the decoder (and of the small encoder)
    lr_schedule: str = "cosine"         # constant | cosine: fall to --min-learning-rate over the run (the first of --epochs, --max-steps, --max-minutes to end it)
    min_learning_rate: float = 1e-4     # where the cosine schedule ends
    lr_decay: float = 1.0               # multiply the learning rate by this every epoch ...
    lr_decay_after: int = 0             # ... after this many epochs
    grad_clip: float = 5.0              # global-norm gradient clipping (0: off)
    seed: int = 0                       # same seed and data give the same losses
    out: str = "runs/captioning"        # run directory: config, vocabulary, checkpoint
    resume: bool = False                # continue the run in --out from its last checkpoint
    resume_from: str = "latest"         # with --resume: latest, or previous (checkpoint.prev.npz) when the latest is damaged
    min_count: int = 1                  # words seen fewer times become <unk>
    max_length: int = 24                # captions are cut to this many words (plus <start> and <end>)
    checkpoint_every: int = 500         # write a checkpoint every N steps (and at every epoch end)
    export: bool = True                 # export RUN_DIR/saved_model (image bytes in, caption out) when training finishes
    eval_images: int = 500              # after training, caption this many validation images and score them (0: skip)
    check_images: str = "verify"        # how images are checked when reading captions: verify | decode | none
    image_memory_mb: int = 2048         # decode images once into memory if they fit in this; else decode every epoch
    fused: str = "auto"                 # auto | on | off: lean CPU recurrent kernels or the stock Keras layers
    strategy: str = "auto"              # auto | none | mirrored | multiworker (tf.distribute); --batch-size is global


# Fields that fix the model, the data and their order; a resumed run must keep them.
RUN_IDENTITY = ("annotations", "val_annotations", "val_fraction", "encoder", "encoder_weights",
                "image_size", "feature_size", "encoder_filters", "encoder_spatial", "fine_tune_after", "cell",
                "num_layers", "hidden_size", "embedding_size", "dropout", "batch_size",
                "captions_per_image", "first_captions", "seed", "min_count", "max_length")


def parse_filters(text):
    try:
        filters = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        filters = ()
    if not filters or any(f <= 0 for f in filters):
        raise UsageError(f"--encoder-filters must be comma-separated positive integers such as "
                         f"24,48,64,96, got {text!r}")
    return filters


def resolved_image_size(config):
    return config.image_size or default_image_size(config.encoder)


def resolved_encoder_weights(config):
    if config.encoder_weights == "auto":
        return "none" if config.encoder == "small" else "imagenet"
    return config.encoder_weights


def validate(config):
    """Raises UsageError for a value no run could use, naming the flag and the allowed range."""
    for name in ("annotations", "images"):
        if not getattr(config, name):
            raise UsageError(f"--{name} is required")
    check_backbone(config.encoder)
    positive = ("num_layers", "hidden_size", "embedding_size", "batch_size", "captions_per_image",
                "epochs", "min_count", "max_length", "checkpoint_every", "feature_size")
    for name in positive:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name in ("max_steps", "eval_images", "image_size", "image_memory_mb", "first_captions"):
        if getattr(config, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if config.fine_tune_after < -1:
        raise UsageError(f"--fine-tune-after must be -1 (never) or a number of epochs, got {config.fine_tune_after}")
    if config.fine_tune_after >= 0 and config.encoder == "small":
        raise UsageError("--fine-tune-after is for pretrained encoders; --encoder small is always "
                         "trained end to end")
    if 0 < config.first_captions < config.captions_per_image:
        raise UsageError(f"--captions-per-image {config.captions_per_image} is more than --first-captions "
                         f"{config.first_captions}: every image would repeat a caption in its batch; pass "
                         f"--captions-per-image {config.first_captions} or fewer")
    if config.lr_schedule not in ("constant", "cosine"):
        raise UsageError(f"--lr-schedule must be constant or cosine, got {config.lr_schedule!r}")
    if not 0 <= config.min_learning_rate <= config.learning_rate:
        raise UsageError(f"--min-learning-rate must be in [0, --learning-rate {config.learning_rate}], "
                         f"got {config.min_learning_rate}")
    for name in ("learning_rate", "encoder_learning_rate"):
        if not getattr(config, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")
    validate_shared(config)
    if not 0 < config.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    if config.check_images not in ("verify", "decode", "none"):
        raise UsageError(f"--check-images must be verify, decode or none, got {config.check_images!r}")
    if config.encoder_spatial not in SPATIAL:
        raise UsageError(f"--encoder-spatial must be one of {', '.join(SPATIAL)}, got "
                         f"{config.encoder_spatial!r}")
    filters = parse_filters(config.encoder_filters)
    size = resolved_image_size(config)
    if config.encoder == "small" and size % (2 ** len(filters)):
        raise UsageError(f"--image-size {size} must be divisible by {2 ** len(filters)} for "
                         f"{len(filters)} small-encoder blocks (--encoder-filters {config.encoder_filters})")
    if config.encoder == "small" and config.encoder_weights == "imagenet":
        raise UsageError("--encoder small has no ImageNet weights; pass --encoder-weights none or "
                         f"a weights file, or a pretrained --encoder ({', '.join(BACKBONES[1:])})")


def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    values = dict(values)
    # Runs saved before --encoder-spatial existed flattened the whole map (the bundled model too).
    values.setdefault("encoder_spatial", "flatten")
    known = {f.name for f in dataclasses.fields(CaptionTrainConfig)}
    return CaptionTrainConfig(**{k: v for k, v in values.items() if k in known})
