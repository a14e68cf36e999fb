"""python -m textgen.export RUN_DIR OUT_DIR [--overwrite] [--no-xla] [--tflite] [--onnx]: a
trained run as a self-contained TensorFlow SavedModel (`textgen.generation.saved_model` says what
it holds), and with --tflite / --onnx its single step for phones and other runtimes in
OUT_DIR/edge/ (`textgen.edge`)."""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen import cli  # noqa: E402
from textgen.config import generation_precision_field, weights_field  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402
from textgen.extras import require_edge  # noqa: E402
from textgen.io import check_out_directory  # noqa: E402

# The edge files and the flag that asks for each.
EDGE_FILES = {"step.tflite": "tflite", "step.onnx": "onnx"}


@dataclasses.dataclass
class ExportConfig:
    run_directory: str = dataclasses.field(
        metadata={"metavar": "RUN_DIR", "help": "the --out directory of a training run"}
    )
    out_directory: str = dataclasses.field(
        metadata={
            "metavar": "OUT_DIR",
            "help": "where to write the SavedModel; must be absent or empty unless --overwrite",
        }
    )
    weights: str = weights_field()
    precision: str = generation_precision_field()
    overwrite: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "replace OUT_DIR if it already holds files (the old one is removed only once "
            "the new one is in place)"
        },
    )
    xla: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "do not compile the generation loop with XLA: slower, and seeded samples "
            "differ from textgen.sample's (argmax text is the same), but runs where XLA is "
            "unavailable or off (e.g. TF Serving on CPU without "
            "--xla_cpu_compilation_enabled)"
        },
    )
    tflite: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "also write OUT_DIR/edge/step.tflite: the single step (token_ids and every "
            "recurrent state in, logits and the new states out) for LiteRT (ai-edge-litert), "
            "with model.json (vocabulary, state names, prime and end ids) beside it"
        },
    )
    onnx: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "also write OUT_DIR/edge/step.onnx: the same step as ONNX (converted by "
            "tf2onnx, checked in onnxruntime), with model.json beside it"
        },
    )


def build_parser():
    return cli.build_parser(
        ExportConfig,
        "python -m textgen.export",
        "Export a trained textgen run as a self-contained TensorFlow SavedModel with signatures "
        "`generate` (prompt -> text, also serving_default), `step` and `score` (text -> "
        "log-probability); with --tflite / --onnx also its single step for LiteRT and ONNX "
        "runtimes in OUT_DIR/edge/.",
        positionals=("run_directory", "out_directory"),
    )


@cli_errors
def main(argv=None):
    config = ExportConfig(**vars(build_parser().parse_args(argv)))
    check_out_directory(config.out_directory, config.overwrite)  # before the slow part
    require_edge(config.tflite, config.onnx)
    # TensorFlow loads only after the quick checks.
    from textgen.edge import EDGE_DIRECTORY
    from textgen.edge.language_model import edge_writer
    from textgen.generation.saved_model import export_saved_model
    from textgen.network.language_model import LanguageModel

    model = LanguageModel.from_run_directory(config.run_directory, config.weights)
    model.generation_precision = config.precision
    export_saved_model(
        model,
        config.out_directory,
        config.overwrite,
        config.xla,
        also=edge_writer(model, config.tflite, config.onnx),
    )
    names = "generate = serving_default, generate_document, step, score, stream_start, stream_block"
    if model.labels:
        names += f", labels; {len(model.labels) - 1} labels as the `label` input"
    print(f"exported {config.run_directory} to {config.out_directory} (signatures: {names})")
    files = [name for name, wanted in EDGE_FILES.items() if getattr(config, wanted)]
    if files:
        folder = os.path.join(config.out_directory, EDGE_DIRECTORY)
        print(f"edge exports in {folder}: {', '.join(files)}, model.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
