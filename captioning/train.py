"""`python -m captioning.train`: train a CNN + LSTM/GRU/RNN image captioning model (every flag in --help)."""

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen._quiet_import import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

from captioning.config import CaptionTrainConfig  # noqa: E402
from textgen.cli import ArgumentParser  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402

HELP = {
    "annotations": "training captions in COCO format (captions_*.json; a shapes data set's captions_train.json) (required)",
    "images": "directory that the image file names in --annotations are relative to (required)",
    "val_annotations": "validation captions in COCO format; without it --val-fraction of the training images are held out",
    "val_images": "directory of the validation images (default: --images)",
    "val_fraction": "without --val-annotations: the share of training images held out for validation",
    "encoder": "image encoder: small (a compact CNN trained with the decoder) or a keras.applications "
               "backbone: mobilenet_v3_small, efficientnet_b0, inception_v3, resnet50",
    "encoder_weights": "none (random), imagenet (Keras download; needs internet) or PATH of a local "
                       "weights file (.weights.h5 or Keras' *_notop.h5); auto: none for small, imagenet otherwise",
    "image_size": "images are resized to this square side in pixels (0: the encoder's own: small 64, "
                  "inception_v3 299, the others 224)",
    "feature_size": "small encoder: length of the image feature vector fed at the first step",
    "encoder_filters": "small encoder: output channels of its conv+pool blocks, comma separated",
    "encoder_spatial": "small encoder: how the layout of its final feature map reaches the feature "
                       "vector, beside the global max-pooling: lines (the maximum over each row and "
                       "each column), flatten (every cell), columns, keypoints (each channel's "
                       "expected x and y), keypoints+lines, or none",
    "fine_tune_after": "pretrained encoders: train the backbone too from this epoch on (-1: keep it frozen)",
    "encoder_learning_rate": "learning rate of the backbone once it is fine-tuned",
    "feature_cache": "directory for the cached features of a frozen backbone (default: OUT/feature_cache); "
                     "share it only between runs on the same data set",
    "cell": "recurrent cell: lstm, gru or rnn (tanh)",
    "num_layers": "number of stacked recurrent layers",
    "hidden_size": "units per recurrent layer",
    "embedding_size": "size of the word embedding",
    "dropout": "dropout rate on each recurrent layer's output",
    "batch_size": "images per batch: the global batch, over all replicas under --strategy",
    "captions_per_image": "captions per image in a batch, the image encoded once (neuraltalk2's seq_per_img)",
    "first_captions": "train on each image's first N captions only, in the annotation file's order, "
                      "and measure the validation loss on the same (0: all of them; BLEU and CIDEr "
                      "always score against every reference). The shapes data's first caption is its "
                      "canonical wording",
    "epochs": "passes over the training images",
    "max_minutes": "stop cleanly, after saving a checkpoint, once the run has taken this many minutes (0: no limit)",
    "max_steps": "stop after this many training steps in all, counting resumed ones (0: no limit)",
    "learning_rate": "Adam learning rate of the decoder (and of the small encoder)",
    "lr_schedule": "constant, or cosine: the learning rate falls from --learning-rate to "
                   "--min-learning-rate along a half cosine over the run, whose end is the first of "
                   "--epochs, --max-steps and --max-minutes (with --max-minutes it follows the clock, "
                   "so runs with the same seed differ slightly)",
    "min_learning_rate": "where --lr-schedule cosine ends",
    "lr_decay": "multiply the learning rate by this at every epoch after --lr-decay-after (1: constant)",
    "lr_decay_after": "epochs at the initial learning rate before --lr-decay starts",
    "grad_clip": "clip the gradients' global norm to this (0: off)",
    "seed": "random seed: the same seed and data give the same losses",
    "out": "run directory for config.json, vocab.json, checkpoint.npz and eval.json",
    "resume": "continue the run in --out from its last checkpoint",
    "resume_from": "with --resume: latest (checkpoint.npz), or previous (checkpoint.prev.npz, the one before it, kept for when the latest is damaged)",
    "min_count": "words seen fewer times than this in the training captions become <unk>",
    "max_length": "captions are cut to this many words, not counting <start> and <end>",
    "checkpoint_every": "write a checkpoint every N steps (one is always written at each epoch end and at the end)",
    "export": "skip exporting RUN_DIR/saved_model (signature caption: image bytes in, caption out), "
              "which training otherwise does when it finishes",
    "eval_images": "after training, caption this many validation images greedily and report correctness "
                   "(shapes data), BLEU-4 and CIDEr (0: skip)",
    "check_images": "how images are checked when the captions are read: verify (cheap), decode (thorough) or none",
    "image_memory_mb": "keep the decoded images in memory when they fit in this many MiB; otherwise "
                       "decode them again every epoch",
    "fused": "auto, on or off: run the recurrent layers through textgen's lean CPU kernels, the LSTM on textgen's C++ ops where they build (auto: when no GPU is visible)",
    "strategy": "tf.distribute strategy: auto (MirroredStrategy over all GPUs if more than one), none, mirrored, "
                "or multiworker (MultiWorkerMirroredStrategy, configured by TF_CONFIG); --batch-size is the "
                "global batch, split over the replicas",
}


def build_parser():
    parser = ArgumentParser(
        prog="python -m captioning.train", argument_default=argparse.SUPPRESS,
        description="Train an image captioning model: a CNN encoder whose feature vector enters a "
                    "textgen recurrent stack at the first step (cs231n / neuraltalk2 style).")
    for field in dataclasses.fields(CaptionTrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = HELP[field.name]
        if isinstance(default, bool):
            if default:  # on unless switched off
                parser.add_argument("--no-" + field.name.replace("_", "-"), dest=field.name,
                                    action="store_false", help=help_text)
            else:
                parser.add_argument(flag, action="store_true", help=help_text)
            continue
        if field.name in ("annotations", "images"):
            parser.add_argument(flag, metavar="PATH", help=help_text)
            continue
        if default != "":
            help_text += f" (default: {default})"
        metavar = "PATH" if isinstance(default, str) and field.name in (
            "val_annotations", "val_images", "feature_cache", "out") else field.name.upper()
        parser.add_argument(flag, type=type(default), metavar=metavar, help=help_text)
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar (it is also hidden when output is not a terminal)")
    return parser


@cli_errors
def main(argv=None):
    from captioning.trainer import train

    args = vars(build_parser().parse_args(argv))
    progress_bar = False if args.pop("no_progress", False) else None
    config = CaptionTrainConfig(**args)
    train(config, explicit=args.keys(), progress_bar=progress_bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
