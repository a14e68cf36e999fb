"""Captioning training configuration: typed values with defaults, each with its --help text.

The model defaults are tuned for the synthetic shapes data (64x64 images, `small` encoder) so that
15 minutes on a 2-core CPU reach the quality target of bench/caption_quality.py.
"""

import dataclasses

from captioning.models.image_encoder import BACKBONES, check_backbone, default_image_size
from captioning.models.small_cnn import SPATIAL
from textgen.config import loop_field, validate_shared
from textgen.errors import UsageError


@dataclasses.dataclass
class CaptionTrainConfig:
    # Not argparse-required: validate() checks them once --resume has read the run's own.
    annotations: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PATH",
            "help": "training captions in COCO format (captions_*.json; a shapes data set's "
            "captions_train.json) (required)",
        },
    )
    images: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PATH",
            "help": "directory that the image file names in --annotations are relative to "
            "(required)",
        },
    )
    val_annotations: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PATH",
            "help": "validation captions in COCO format; without it --val-fraction of the training "
            "images are held out",
        },
    )
    val_images: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PATH",
            "default_help": "--images",
            "help": "directory of the validation images",
        },
    )
    val_fraction: float = dataclasses.field(
        default=0.05,
        metadata={
            "help": "without --val-annotations: the share of training images held out for "
            "validation, in (0, 1)"
        },
    )
    encoder: str = dataclasses.field(
        default="small",
        metadata={
            "help": "image encoder: small (a compact CNN trained with the decoder) or a "
            "keras.applications backbone: mobilenet_v3_small, efficientnet_b0, "
            "inception_v3, resnet50"
        },
    )
    encoder_weights: str = dataclasses.field(
        default="auto",
        metadata={
            "help": "none (random), imagenet (Keras download; needs internet) or PATH of a local "
            "weights file (.weights.h5 or Keras' *_notop.h5); auto: none for small, "
            "imagenet otherwise"
        },
    )
    image_size: int = dataclasses.field(
        default=0,
        metadata={
            "help": "images are resized to this square side in pixels (0: the encoder's own: "
            "small 64, inception_v3 299, the others 224)"
        },
    )
    feature_size: int = dataclasses.field(
        default=256,
        metadata={
            "help": "small encoder: length of the image feature vector fed at the first step"
        },
    )
    encoder_filters: str = dataclasses.field(
        default="24,48,64,96",
        metadata={
            "help": "small encoder: output channels of its conv+pool blocks, comma separated; "
            "--image-size must be divisible by 2 to the number of blocks"
        },
    )
    encoder_spatial: str = dataclasses.field(
        default="lines",
        metadata={
            "help": "small encoder: how the layout of its final feature map reaches the feature "
            "vector, beside the global max-pooling: lines (the maximum over each row and "
            "each column), flatten (every cell), columns, keypoints (each channel's "
            "expected x and y), keypoints+lines, or none"
        },
    )
    fine_tune_after: int = dataclasses.field(
        default=-1,
        metadata={
            "help": "pretrained encoders: train the backbone too from this epoch on (-1: keep it "
            "frozen)"
        },
    )
    encoder_learning_rate: float = dataclasses.field(
        default=1e-5, metadata={"help": "learning rate of the backbone once it is fine-tuned, > 0"}
    )
    feature_cache: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "PATH",
            "default_help": "OUT/feature_cache",
            "help": "directory for the cached features of a frozen backbone; share it only between "
            "runs on the same data set",
        },
    )
    scst_after: int = dataclasses.field(
        default=-1,
        metadata={
            "metavar": "EPOCH",
            "help": "self-critical sequence training from this epoch on (0-based, below --epochs): "
            "each step samples --scst-samples captions per image and minimises "
            "-(CIDEr-D(sample) - baseline) * log p(sample) (-1: cross-entropy only)",
        },
    )
    scst_samples: int = dataclasses.field(
        default=5,
        metadata={"help": "self-critical training: captions sampled per image in each step, >= 1"},
    )
    scst_baseline: str = dataclasses.field(
        default="greedy",
        metadata={
            "help": "self-critical training: the reward subtracted from a sample's, greedy (the "
            "greedy caption's, Rennie et al.) or mean (the mean of the image's other samples, "
            "'new self-critical'; needs --scst-samples 2 or more)"
        },
    )
    # freeze: on the shapes benchmark, 3 minutes of SCST with the small CNN learning from the
    # reward fell from 77.6% to 73.0% correct; with it frozen, 77.0%.
    scst_encoder: str = dataclasses.field(
        default="freeze",
        metadata={
            "help": "self-critical training: freeze (only the decoder learns from the reward; the "
            "encoder runs in inference mode) or train (the encoder learns from it too)"
        },
    )
    scst_end_token: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "self-critical training: reward the words alone; by default <end> counts as "
            "the last word of every sample and reference in the reward's n-grams, as in the "
            "SCST paper's appendix, so that a caption cut off after 'with a' earns less than "
            "one that ends where the references end"
        },
    )
    scst_learning_rate: float = dataclasses.field(
        default=2e-4,
        metadata={
            "help": "self-critical training: the (constant) Adam learning rate of its epochs, > 0"
        },
    )
    cell: str = loop_field("cell")
    num_layers: int = dataclasses.field(
        default=1, metadata={"help": "number of stacked recurrent layers"}
    )
    hidden_size: int = dataclasses.field(
        default=256, metadata={"help": "units per recurrent layer"}
    )
    embedding_size: int = dataclasses.field(
        default=64, metadata={"help": "size of the word embedding"}
    )
    dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "dropout rate on each recurrent layer's output, in [0, 1)"}
    )
    batch_size: int = dataclasses.field(
        default=32,
        metadata={"help": "images per batch: the global batch, over all replicas under --strategy"},
    )
    # 2 beat 5 in 15 minutes on the shapes data.
    captions_per_image: int = dataclasses.field(
        default=2,
        metadata={
            "help": "captions per image in a batch, the image encoded once (neuraltalk2's "
            "seq_per_img)"
        },
    )
    first_captions: int = dataclasses.field(
        default=0,
        metadata={
            "help": "train on each image's first N captions only, in the annotation file's order, "
            "and measure the validation loss on the same (0: all of them; BLEU and CIDEr "
            "always score against every reference). The shapes data's first caption is its "
            "canonical wording"
        },
    )
    epochs: int = dataclasses.field(
        default=30, metadata={"help": "passes over the training images"}
    )
    max_minutes: float = loop_field("max_minutes")
    max_steps: int = loop_field("max_steps")
    learning_rate: float = dataclasses.field(
        default=2e-3,
        metadata={"help": "Adam learning rate of the decoder (and of the small encoder), > 0"},
    )
    lr_schedule: str = loop_field("lr_schedule")
    min_learning_rate: float = loop_field("min_learning_rate")
    lr_decay: float = loop_field("lr_decay")
    lr_decay_after: int = dataclasses.field(
        default=0, metadata={"help": "epochs at the initial learning rate before --lr-decay starts"}
    )
    grad_clip: float = loop_field("grad_clip")
    seed: int = loop_field("seed")
    out: str = dataclasses.field(
        default="runs/captioning",
        metadata={
            "metavar": "PATH",
            "help": "run directory for config.json, vocab.json, checkpoint.npz and eval.json",
        },
    )
    resume: bool = loop_field("resume")
    resume_from: str = loop_field("resume_from")
    min_count: int = dataclasses.field(
        default=1,
        metadata={"help": "words seen fewer times than this in the training captions become <unk>"},
    )
    max_length: int = dataclasses.field(
        default=24,
        metadata={"help": "captions are cut to this many words, not counting <start> and <end>"},
    )
    checkpoint_every: int = loop_field("checkpoint_every")
    export: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "skip exporting RUN_DIR/saved_model (signature caption: image bytes in, "
            "caption out), which training otherwise does when it finishes"
        },
    )
    eval_images: int = dataclasses.field(
        default=500,
        metadata={
            "help": "after training, caption this many validation images greedily and report "
            "correctness (shapes data), BLEU-4 and CIDEr (0: skip)"
        },
    )
    check_images: str = dataclasses.field(
        default="verify",
        metadata={
            "help": "how images are checked when the captions are read: verify (cheap), decode "
            "(thorough) or none"
        },
    )
    image_memory_mb: int = dataclasses.field(
        default=2048,
        metadata={
            "help": "keep the decoded images in memory when they fit in this many MiB; otherwise "
            "decode them again every epoch"
        },
    )
    fused: str = loop_field("fused")
    precision: str = loop_field("precision")
    strategy: str = dataclasses.field(
        default="auto",
        metadata={
            "help": "tf.distribute strategy: auto (MirroredStrategy over all GPUs if more than "
            "one), none, mirrored, or multiworker (MultiWorkerMirroredStrategy, configured by "
            "TF_CONFIG); --batch-size is the global batch, split over the replicas"
        },
    )


# Fields that fix the model, the data and their order; a resumed run must keep them.
RUN_IDENTITY = (
    "annotations",
    "val_annotations",
    "val_fraction",
    "encoder",
    "encoder_weights",
    "image_size",
    "feature_size",
    "encoder_filters",
    "encoder_spatial",
    "fine_tune_after",
    "cell",
    "num_layers",
    "hidden_size",
    "embedding_size",
    "dropout",
    "batch_size",
    "captions_per_image",
    "first_captions",
    "seed",
    "min_count",
    "max_length",
)


def parse_filters(text):
    try:
        filters = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        filters = ()
    if not filters or any(f <= 0 for f in filters):
        raise UsageError(
            f"`encoder_filters` must be comma-separated positive integers such as "
            f"24,48,64,96, got {text!r}"
        )
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
            raise UsageError(f"`{name}` is required")
    check_backbone(config.encoder)
    positive = (
        "num_layers",
        "hidden_size",
        "embedding_size",
        "batch_size",
        "captions_per_image",
        "epochs",
        "min_count",
        "max_length",
        "checkpoint_every",
        "feature_size",
    )
    for name in positive:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise UsageError(f"`{name}` must be a positive integer, got {value}")
    for name in ("max_steps", "eval_images", "image_size", "image_memory_mb", "first_captions"):
        if getattr(config, name) < 0:
            raise UsageError(f"`{name}` must be >= 0, got {getattr(config, name)}")
    if config.fine_tune_after < -1:
        raise UsageError(
            "`fine_tune_after` must be -1 (never) or a number of epochs, "
            f"got {config.fine_tune_after}"
        )
    if config.fine_tune_after >= 0 and config.encoder == "small":
        raise UsageError(
            "`fine_tune_after` is for pretrained encoders; `encoder` small is always "
            "trained end to end"
        )
    if 0 < config.first_captions < config.captions_per_image:
        raise UsageError(
            f"`captions_per_image` {config.captions_per_image} is more than `first_captions` "
            f"{config.first_captions}: every image would repeat a caption in its batch; pass "
            f"`captions_per_image` {config.first_captions} or fewer"
        )
    validate_self_critical(config)
    for name in ("learning_rate", "encoder_learning_rate", "scst_learning_rate"):
        if not getattr(config, name) > 0:
            raise UsageError(f"`{name}` must be positive, got {getattr(config, name)}")
    validate_shared(config)
    if not 0 < config.val_fraction < 1:
        raise UsageError(f"`val_fraction` must be in (0, 1), got {config.val_fraction}")
    if config.check_images not in ("verify", "decode", "none"):
        raise UsageError(
            f"`check_images` must be verify, decode or none, got {config.check_images!r}"
        )
    if config.encoder_spatial not in SPATIAL:
        raise UsageError(
            f"`encoder_spatial` must be one of {', '.join(SPATIAL)}, got {config.encoder_spatial!r}"
        )
    filters = parse_filters(config.encoder_filters)
    size = resolved_image_size(config)
    if config.encoder == "small" and size % (2 ** len(filters)):
        raise UsageError(
            f"`image_size` {size} must be divisible by {2 ** len(filters)} for "
            f"{len(filters)} small-encoder blocks (`encoder_filters` {config.encoder_filters})"
        )
    if config.encoder == "small" and config.encoder_weights == "imagenet":
        raise UsageError(
            "`encoder` small has no ImageNet weights; pass `encoder_weights` none or "
            f"a weights file, or a pretrained `encoder` ({', '.join(BACKBONES[1:])})"
        )


def validate_self_critical(config):
    if config.scst_after < -1:
        raise UsageError(
            f"`scst_after` must be -1 (never) or an epoch from 0, got {config.scst_after}"
        )
    if config.scst_after >= config.epochs:
        raise UsageError(
            f"`scst_after` {config.scst_after} is not below `epochs` {config.epochs}: no epoch "
            f"would train self-critically (epochs count from 0); pass `scst_after` 0 to "
            f"{config.epochs - 1} or a larger `epochs`"
        )
    if config.scst_samples < 1:
        raise UsageError(
            f"`scst_samples` must be >= 1 (captions sampled per image), got {config.scst_samples}"
        )
    if config.scst_baseline not in ("greedy", "mean"):
        raise UsageError(f"`scst_baseline` must be greedy or mean, got {config.scst_baseline!r}")
    if config.scst_encoder not in ("train", "freeze"):
        raise UsageError(f"`scst_encoder` must be train or freeze, got {config.scst_encoder!r}")
    if config.scst_baseline == "mean" and config.scst_samples < 2:
        raise UsageError(
            "`scst_baseline` mean averages the other samples of an image: pass `scst_samples` 2 "
            f"or more (got {config.scst_samples})"
        )


def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    values = dict(values)
    # Runs saved before --encoder-spatial existed flattened the whole map (the bundled model too).
    values.setdefault("encoder_spatial", "flatten")
    # Runs saved before --scst-end-token existed rewarded the words alone; they resume so.
    values.setdefault("scst_end_token", False)
    known = {f.name for f in dataclasses.fields(CaptionTrainConfig)}
    return CaptionTrainConfig(**{k: v for k, v in values.items() if k in known})
