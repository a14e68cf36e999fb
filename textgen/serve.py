"""`python -m textgen.serve MODEL[=NAME] ...`: exported SavedModels (or run directories, exported
on the fly) behind HTTP in TF Serving's REST format, with batching, server-sent-event streams,
Prometheus metrics and a web page (docs/serving.md)."""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen import cli  # noqa: E402
from textgen.errors import cli_errors  # noqa: E402


@dataclasses.dataclass
class ServeConfig:
    models: list = dataclasses.field(
        default_factory=list,
        metadata={
            "metavar": "MODEL[=NAME]",
            "nargs": "+",
            "help": "a SavedModel folder (textgen.export, captioning.export) or a training run "
            "directory, served as /v1/models/NAME (default NAME: the folder's name)",
        },
    )
    host: str = dataclasses.field(
        default="127.0.0.1",
        metadata={"help": "the address to listen on; 0.0.0.0 listens on every interface"},
    )
    port: int = dataclasses.field(
        default=8501, metadata={"help": "the port (TF Serving's REST port; 0: any free one)"}
    )
    batching: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "run every predict request on its own instead of merging concurrent ones"
        },
    )
    max_batch: int = dataclasses.field(
        default=64, metadata={"help": "most rows in one merged model call"}
    )
    batch_timeout_ms: float = dataclasses.field(
        default=0.0,
        metadata={
            "help": "how long the first request of a batch waits for others, in ms (0: a batch "
            "is what queued while the model was busy, so a lone request never waits)"
        },
    )
    warmup: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "before serving, compile each text model's generation for every batch size "
            "batching can make (about a second each), so that no request waits for XLA"
        },
    )
    max_queue: int = dataclasses.field(
        default=256,
        metadata={"help": "most predict requests waiting per model; more get 503 and Retry-After"},
    )
    max_streams: int = dataclasses.field(
        default=16, metadata={"help": "most :stream requests at once; more get 503"}
    )
    max_length: int = dataclasses.field(
        default=2000,
        metadata={
            "help": "the largest `length` (or captioners' `max_length`) a request may ask for"
        },
    )
    max_body: int = dataclasses.field(
        default=10 * 2**20, metadata={"help": "the largest request body in bytes; larger get 413"}
    )
    token: str = dataclasses.field(
        default="",
        metadata={
            "default_help": "none",
            "help": "require `Authorization: Bearer TOKEN` on every route but / and /healthz",
        },
    )
    shutdown_timeout: float = dataclasses.field(
        default=60.0,
        metadata={"help": "on SIGTERM, seconds to let requests in flight finish before closing"},
    )


def build_parser():
    return cli.build_parser(
        ServeConfig,
        "python -m textgen.serve",
        "Serve exported text models and captioners over HTTP: TF Serving's REST API "
        "(/v1/models/NAME:predict, /metadata), streams (:stream), /healthz, /metrics and a web "
        "page at /.",
        positionals=("models",),
    )


@cli_errors
def main(argv=None):
    config = ServeConfig(**vars(build_parser().parse_args(argv)))
    from textgen.serving.server import serve

    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
