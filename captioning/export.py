"""python -m captioning.export RUN_DIR OUT_DIR [--overwrite] [--tflite] [--onnx]: a trained
captioner as a self-contained TensorFlow SavedModel (`captioning.inference.saved_model` lists its
signatures), and with --tflite / --onnx its encoder and decoding step for phones and other
runtimes in OUT_DIR/edge/ (`captioning.inference.edge_export`)."""

import dataclasses
import os
import sys

from captioning.inference.saved_model import DEFAULT_BEAM_SIZE, DEFAULT_MAX_LENGTH
from textgen import cli
from textgen.errors import cli_errors
from textgen.extras import require_edge
from textgen.io import check_out_directory


@dataclasses.dataclass
class CaptionExportConfig:
    run_directory: str = dataclasses.field(
        metadata={"metavar": "RUN_DIR", "help": "the --out directory of a captioning.train run"}
    )
    out_directory: str = dataclasses.field(
        metadata={
            "metavar": "OUT_DIR",
            "help": "where to write the SavedModel; must be absent or empty unless --overwrite",
        }
    )
    overwrite: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "replace OUT_DIR if it already holds files (the old one is removed only once "
            "the new one is in place)"
        },
    )
    beam_size: int = dataclasses.field(
        default=DEFAULT_BEAM_SIZE,
        metadata={
            "help": "beam size used when a caller passes only the image bytes, >= 1 (1: greedy)"
        },
    )
    max_length: int = dataclasses.field(
        default=DEFAULT_MAX_LENGTH,
        metadata={"help": "most words per caption when a caller passes only the image bytes, >= 1"},
    )
    tflite: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "also write OUT_DIR/edge/encoder.tflite (uint8 pixels at the model's square "
            "size -> the first word's logits and the recurrent states) and step.tflite (word id "
            "and states -> logits and new states) for LiteRT (ai-edge-litert), with model.json "
            "(vocabulary, start and end ids, state names) beside them"
        },
    )
    onnx: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "also write OUT_DIR/edge/encoder.onnx and step.onnx: the same two models as "
            "ONNX (converted by tf2onnx, checked in onnxruntime), with model.json beside them"
        },
    )


def build_parser():
    return cli.build_parser(
        CaptionExportConfig,
        "python -m captioning.export",
        "Export a trained captioning run as a self-contained TensorFlow SavedModel with the "
        "signature `caption` (image bytes -> caption, log_prob; also serving_default), "
        "`caption_n_best` (-> captions[B, K], log_probs[B, K]) and `config`; with --tflite / "
        "--onnx also its encoder and decoding step for LiteRT and ONNX runtimes in "
        "OUT_DIR/edge/.",
        positionals=("run_directory", "out_directory"),
    )


@cli_errors
def main(argv=None):
    config = CaptionExportConfig(**vars(build_parser().parse_args(argv)))
    check_out_directory(config.out_directory, config.overwrite)  # before the slow part
    require_edge(config.tflite, config.onnx)
    # Keras and TensorFlow: after the quick checks.
    from captioning.inference.edge_export import edge_writer
    from captioning.inference.saved_model import export_saved_model
    from captioning.models.captioner import Captioner
    from textgen.edge import EDGE_DIRECTORY

    model = Captioner.from_run_directory(config.run_directory)
    export_saved_model(
        model,
        config.out_directory,
        config.overwrite,
        config.beam_size,
        config.max_length,
        also=edge_writer(model, config.tflite, config.onnx, config.max_length),
    )
    print(
        f"exported {config.run_directory} to {config.out_directory} "
        "(signatures: caption = serving_default, caption_n_best, config)"
    )
    formats = [flag for flag in ("tflite", "onnx") if getattr(config, flag)]  # also the suffixes
    if formats:
        folder = os.path.join(config.out_directory, EDGE_DIRECTORY)
        files = [f"{part}.{suffix}" for suffix in formats for part in ("encoder", "step")]
        print(f"edge exports in {folder}: {', '.join(files)}, model.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
