"""`python -m textgen.sample [RUN_DIR]`: generate text from a trained run, all at once, streamed
as it is generated, or in a prompt loop (`--interactive`)."""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen import cli, resources  # noqa: E402
from textgen.config import generation_precision_field, weights_field  # noqa: E402
from textgen.errors import UsageError, as_cli_message, cli_errors  # noqa: E402

BUNDLED_MODEL = "shakespeare"


@dataclasses.dataclass
class SampleConfig:
    run_directory: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "RUN_DIR",
            "nargs": "?",
            "help": "the --out directory of a training run (default: the bundled shakespeare "
            "model)",
        },
    )
    weights: str = weights_field()
    precision: str = generation_precision_field()
    # Fed in one call, so it warms up the state as well as starting the text.
    prime: str = dataclasses.field(
        default="", metadata={"default_help": "none", "help": "text the samples start with"}
    )
    length: int = dataclasses.field(
        default=500,
        metadata={
            "help": "characters (tokens for word-level models) per sample, prime included; > 0"
        },
    )
    temperature: float = dataclasses.field(
        default=1.0,
        metadata={
            "help": "sampling temperature, >= 0: 0 is argmax, below 1 more conservative, above 1 "
            "more varied"
        },
    )
    top_k: int = dataclasses.field(
        default=0,
        metadata={
            "help": "sample only among the k most probable characters (tokens); 0 means no cut"
        },
    )
    num_samples: int = dataclasses.field(
        default=1, metadata={"help": "number of samples, generated together as one batch"}
    )
    documents: int = dataclasses.field(
        default=0,
        metadata={
            "help": "sample this many whole documents, generated together as one batch: each "
            "starts after the end-of-document token (with --prime, if given) and stops at the "
            "next one, or at --length; needs a model trained on several documents (0: plain "
            "samples)"
        },
    )
    until_end: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "stop each sample at the end-of-document token (not printed), or at "
            "--length; needs a model trained on several documents"
        },
    )
    label: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "NAME",
            "nargs": "+",
            "default_help": "none (<none>)",
            "help": "a model trained with --labels: generate under this label, each sample a new "
            "document of it (after the end-of-document token, then --prime); several labels "
            "give --num-samples samples (--documents documents) of each",
        },
    )
    seed: int = dataclasses.field(
        default=0, metadata={"help": "random seed: the same seed gives the same text"}
    )
    unknown: str = dataclasses.field(
        default="error",
        metadata={
            "choices": ("error", "skip"),
            "help": "what to do with prime characters outside the vocabulary",
        },
    )
    allow_unk: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "word-level models: allow <unk> in the samples (never emitted by default)"
        },
    )
    stream: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "print the text as it is generated, 64 tokens at a time (the default when "
            "standard output is a terminal and --num-samples is 1)"
        },
    )
    interactive: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "a prompt loop: each line typed is a prime, its continuation of --length "
            "new tokens streams out; :temp T, :len N, :topk K, :seed S change the settings, "
            ":reset restores them, Ctrl-D leaves"
        },
    )


def build_parser():
    return cli.build_parser(
        SampleConfig,
        "python -m textgen.sample",
        "Generate text from a textgen run directory.",
        positionals=("run_directory",),
    )


def run_directory_or_bundled(path):
    """RUN_DIR, or when none is given the bundled model (`textgen.resources`)."""
    if path:
        return path
    bundled = str(resources.bundled_model(BUNDLED_MODEL))
    if not os.path.isdir(bundled):
        raise UsageError(
            f"no RUN_DIR given and the bundled model {bundled} is not there; pass the --out "
            "directory of a training run (python -m textgen.train --out RUN_DIR makes one)"
        )
    return bundled


def load_model(config):
    # Imported here, so that --help and flag errors answer without loading TensorFlow.
    from textgen.network.language_model import LanguageModel, check_sampling_arguments

    check_sampling_arguments(config.length, config.temperature, config.top_k, config.num_samples)
    model = LanguageModel.from_run_directory(
        run_directory_or_bundled(config.run_directory), config.weights
    )
    model.generation_precision = config.precision
    return model


def labels_of(config):
    """The --label names as a list ([None]: no label)."""
    if not config.label:
        return [None]
    return [config.label] if isinstance(config.label, str) else list(config.label)


def sample(config):
    """Loads the run and returns its samples (a list of strings): `documents` whole documents,
    or `num_samples` samples, of each --label in turn."""
    if config.documents < 0:
        raise UsageError(f"--documents must be >= 0 (0: plain samples), got {config.documents}")
    if config.documents and config.num_samples != 1:
        raise UsageError(
            f"--documents {config.documents} samples that many documents; drop --num-samples"
        )
    model = load_model(config)
    labels = labels_of(config)
    for label in labels:
        model.label_ids(label)  # an unknown label fails before anything is generated
    if config.documents:
        count = config.documents
        return [
            text
            for label in labels
            for text in model.sample_documents(
                count,
                config.prime,
                config.length,
                config.temperature,
                config.top_k,
                config.seed,
                config.unknown,
                config.allow_unk,
                label=label,
            )
        ]
    # One batch for every label: the labels are per row.
    rows = [label for label in labels for _ in range(config.num_samples)]
    return model.sample(
        config.prime,
        config.length,
        config.temperature,
        config.top_k,
        len(rows),
        config.seed,
        config.unknown,
        config.allow_unk,
        config.until_end,
        label=rows if labels != [None] else None,
    )


def write(stdout, text):
    stdout.write(text)
    stdout.flush()


def stream(config, stdout):
    """Writes one sample to `stdout` as it is generated (`LanguageModel.stream`), flushed after
    every compiled block, then a line end."""
    if config.num_samples != 1:
        raise UsageError(
            f"--stream shows one sample as it is made; drop --stream or pass --num-samples 1 "
            f"(got {config.num_samples})"
        )
    if config.documents:
        raise UsageError("--documents prints whole documents when they are done; drop --stream")
    if len(labels_of(config)) > 1:
        raise UsageError("--stream shows one sample as it is made; give one --label")
    model = load_model(config)
    pieces = model.stream(
        config.prime,
        config.length,
        config.temperature,
        config.top_k,
        config.seed,
        config.unknown,
        config.allow_unk,
        config.until_end,
        label=labels_of(config)[0],
    )
    for piece in pieces:
        write(stdout, piece)
    write(stdout, "\n")


HELP = (
    "type a line to continue it; :temp T, :len N (new tokens), :topk K, :seed S change the "
    "settings, :reset restores them, Ctrl-D leaves"
)
# command: (setting, its type)
COMMANDS = {
    ":temp": ("temperature", float),
    ":len": ("length", int),
    ":topk": ("top_k", int),
    ":seed": ("seed", int),
}


def read_line(stdin, terminal):
    """The next line typed, without its line end; None at the end of the input (Ctrl-D)."""
    if terminal:
        try:
            return input("> ")  # with readline's line editing and history
        except EOFError:
            return None
    line = stdin.readline()
    return line.removesuffix("\n") if line else None


def apply_command(line, settings, initial):
    """The settings after the `:` command `line`; UsageError for a bad one."""
    from textgen.network.language_model import check_sampling_arguments

    words = line.split()
    if words == [":reset"]:
        return dict(initial)
    if words[0] not in COMMANDS or len(words) != 2:
        raise UsageError(f"{line.strip()!r} is not a command; {HELP}")
    name, kind = COMMANDS[words[0]]
    try:
        value = kind(words[1])
    except ValueError:
        raise UsageError(f"{words[0]} takes a number, got {words[1]!r}") from None
    changed = dict(settings, **{name: value})
    check_sampling_arguments(changed["length"], changed["temperature"], changed["top_k"], 1)
    return changed


def continue_line(model, line, settings, seed, config, stdout):
    """Streams the continuation of `line` (the line itself is not repeated)."""
    prime_length = len(model.prime_ids(line, 1 << 30, config.unknown)[0]) if line else 0
    pieces = model.stream(
        line or None,
        prime_length + settings["length"],
        settings["temperature"],
        settings["top_k"],
        seed,
        config.unknown,
        config.allow_unk,
        config.until_end,
        label=labels_of(config)[0],
    )
    for i, piece in enumerate(pieces):
        if i or not line:  # piece 0 is the prime
            write(stdout, piece)


def interactive(config, stdin, stdout, stderr):
    """The prompt loop of --interactive: each line read from `stdin` is a prime, whose
    continuation (`length` new tokens) streams to `stdout`; settings and errors go to `stderr`,
    so `stdout` holds only generated text. The i-th continuation is sampled with seed + i."""
    if config.num_samples != 1 or config.prime or config.documents:
        raise UsageError(
            "--interactive takes each prime from a typed line, one sample each; "
            "drop --prime, --num-samples and --documents"
        )
    model = load_model(config)
    initial = {name: getattr(config, name) for name, _ in COMMANDS.values()}
    settings, count = dict(initial), 0
    terminal = stdin.isatty()
    if terminal:
        import readline  # noqa: F401  (imported, it gives input() line editing)

        print(HELP, file=stderr)
    while (line := read_line(stdin, terminal)) is not None:
        try:
            if line.strip() == ":help":
                print(HELP, file=stderr)
            elif line.startswith(":"):
                settings = apply_command(line, settings, initial)
                count = 0 if line.split() == [":reset"] else count
                print(" ".join(f"{k}={v}" for k, v in settings.items()), file=stderr)
            else:
                count += 1
                continue_line(model, line, settings, settings["seed"] + count - 1, config, stdout)
                write(stdout, "\n")
        except UsageError as error:
            print(f"error: {as_cli_message(error)}", file=stderr)
        except KeyboardInterrupt:  # Ctrl-C stops this continuation, not the loop
            write(stdout, "\n")
    if terminal:
        write(stdout, "\n")  # so that the shell's prompt starts on a line of its own
    return 0


@cli_errors
def main(argv=None):
    config = SampleConfig(**vars(build_parser().parse_args(argv)))
    if config.interactive:
        return interactive(config, sys.stdin, sys.stdout, sys.stderr)
    single = config.num_samples == 1 and not config.documents and len(labels_of(config)) == 1
    if config.stream or (sys.stdout.isatty() and single):
        stream(config, sys.stdout)
        return 0
    texts = sample(config)
    labels = labels_of(config)
    each = len(texts) // len(labels)
    for i, text in enumerate(texts):
        if len(texts) > 1:
            label = labels[i // each]
            under = f" ({label})" if label else ""
            print(f"---- {'document' if config.documents else 'sample'} {i + 1}{under} ----")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
