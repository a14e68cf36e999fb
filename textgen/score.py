"""`python -m textgen.score [RUN_DIR] [FILE|-]`: how likely a text is under a trained model."""

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from textgen import cli  # noqa: E402
from textgen.config import weights_field  # noqa: E402
from textgen.errors import UsageError, cli_errors  # noqa: E402
from textgen.sample import run_directory_or_bundled  # noqa: E402


@dataclasses.dataclass
class ScoreConfig:
    run_directory: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "RUN_DIR",
            "nargs": "?",
            "help": "the --out directory of a training run; alone, a path to a file or - is "
            "FILE (default: the bundled shakespeare model)",
        },
    )
    weights: str = weights_field()
    file: str = dataclasses.field(
        default="-",
        metadata={
            "metavar": "FILE",
            "nargs": "?",
            "help": "the text to score, - for standard input (default: -)",
        },
    )
    per_line: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "score each line on its own, from zero state (after --prime), one output "
            "line per input line: log-probability (nats), tokens, bits per character, the line"
        },
    )
    per_document: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "score each document on its own, the text cut into documents as the run's "
            "--document-boundary cut its corpus: from zero state after the end-of-document "
            "token (and --prime), the end token that closes it scored too (counted as a token "
            "and a character); one output line per document: log-probability (nats), tokens, "
            "bits per character, its start"
        },
    )
    json: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "print JSON: one object for the text, or with --per-line (--per-document) "
            "one per line (document): text, tokens, characters, log_prob, bits_per_char"
        },
    )
    prime: str = dataclasses.field(
        default="",
        metadata={
            "default_help": "none (a newline, as sampling starts)",
            "help": "context fed before the text (before each line with --per-line); it is "
            "not scored",
        },
    )
    streams: int = dataclasses.field(
        default=0,
        metadata={
            "help": "score the text as this many contiguous streams in one batch, each from "
            "zero state (faster, slightly worse scores at each stream's start); 0: one per "
            "10,000 tokens, at most 32"
        },
    )
    exact: bool = dataclasses.field(
        default=False,
        metadata={"help": "one stream: the state carried through the whole text (--streams 1)"},
    )
    label: str = dataclasses.field(
        default="",
        metadata={
            "metavar": "NAME",
            "default_help": "none (<none>)",
            "help": "a model trained with --labels: score under this label (the text read as a "
            "new document of it, after the end-of-document token)",
        },
    )
    classify: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "a model trained with --labels: score the text (each line with --per-line, "
            "each document with --per-document) under every label, and name the most likely "
            "one by Bayes' rule (log p(text | label) + log p(label), the prior from --prior): a "
            "generative classifier. Prints the best label, its probability given the text, "
            "its log p(text | label) and the runner-up's (with --json every label's)"
        },
    )
    prior: str = dataclasses.field(
        default="training",
        metadata={
            "choices": ("training", "uniform"),
            "help": "with --classify: the labels' prior, the share of training documents each "
            "label had (training; add-one smoothed; uniform for a run trained before "
            "label_counts.json) or the same for every label (uniform)",
        },
    )
    batch_size: int = dataclasses.field(
        default=64,
        metadata={
            "help": "with --per-line (--per-document): lines (documents) scored together in one "
            "batch"
        },
    )
    unknown: str = dataclasses.field(
        default="error",
        metadata={
            "choices": ("error", "skip"),
            "help": "what to do with characters outside the vocabulary (a word-level model "
            "maps unknown words to <unk> and counts them)",
        },
    )
    encoding: str = dataclasses.field(
        default="utf-8", metadata={"help": "codec of FILE, any Python codec"}
    )


def build_parser():
    return cli.build_parser(
        ScoreConfig,
        "python -m textgen.score",
        "Score a text under a textgen model: total log-probability (nats), nats per token, "
        "bits per character and perplexity.",
        positionals=("run_directory", "file"),
    )


def resolve_arguments(config):
    """A single positional that is a file (or -) is FILE, scored by the bundled model."""
    given = config.run_directory
    if given and config.file == "-" and (given == "-" or os.path.isfile(given)):
        return dataclasses.replace(config, run_directory="", file=given)
    return config


def read_input(path, encoding):
    """The text of FILE (or standard input for -): a UTF-8 byte-order mark dropped, \\r\\n made
    \\n, as training reads its corpus."""
    import codecs

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"unknown encoding {encoding!r}; pass --encoding with a Python codec name such as "
            "utf-8, latin-1 or gb18030"
        ) from None
    name = "standard input" if path == "-" else path
    if path == "-":
        if sys.stdin.isatty():
            print("reading the text from standard input (end it with Ctrl-D)", file=sys.stderr)
        raw = sys.stdin.buffer.read()
    elif os.path.isdir(path):
        raise UsageError(f"{path} is a directory; pass the path of a text file, or - for stdin")
    elif not os.path.exists(path):
        raise UsageError(f"{path} does not exist; pass the path of a text file, or - for stdin")
    else:
        with open(path, "rb") as f:
            raw = f.read()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise UsageError(
            f"{name}: line {line}, column {column}, byte offset {error.start}: bytes "
            f"{raw[error.start : error.end].hex(' ')} are not valid {encoding}; pass --encoding "
            "with the file's codec"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text:
        raise UsageError(f"{name} is empty: there is nothing to score")
    return name, text


def score(config):
    """Loads the model and scores FILE: one result dict for the whole text, or with
    `per_line` a list of one per line (textgen.generation.log_probability)."""
    streams = 1 if config.exact else config.streams
    if config.exact and config.streams not in (0, 1):
        raise UsageError(f"--exact is one stream; drop --streams {config.streams} or --exact")
    if streams < 0:
        raise UsageError(f"--streams must be >= 0 (0: automatic), got {streams}")
    if config.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer, got {config.batch_size}")
    if config.per_line and config.per_document:
        raise UsageError("--per-line and --per-document cut the text two ways; pass one of them")
    if config.classify and config.label:
        raise UsageError("--classify scores under every label; drop --label")
    name, text = read_input(config.file, config.encoding)
    # Imported here, so that --help and flag errors answer without loading TensorFlow.
    from textgen.generation import log_probability
    from textgen.network.language_model import LanguageModel

    model = LanguageModel.from_run_directory(
        run_directory_or_bundled(config.run_directory), config.weights
    )
    labels = model.label_ids(config.label or None)
    if config.classify:
        return classify(config, model, name, text), model
    if config.per_line or config.per_document:
        texts = texts_of(config, model, name, text)
        return log_probability.score_texts(
            model,
            texts,
            config.prime,
            config.unknown,
            config.batch_size,
            where=name,
            documents=config.per_document,
            labels=None if labels is None else labels.repeat(len(texts)),
        ), model
    result = log_probability.score_text(
        model, text, config.prime, config.unknown, streams, where=name, labels=labels
    )
    if config.label:
        result["label"] = config.label
    return {"file": name, **result}, model


def lines_of(text):
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the text's final line end does not start another line
    return lines


def documents_of(model, name, text):
    """The documents of `text`, cut as the run's --document-boundary cut its corpus."""
    from textgen.corpus.documents import split_documents

    train_config = getattr(model, "train_config", None)
    boundary = train_config.document_boundary if train_config is not None else "file"
    documents = split_documents(text, boundary)
    if not documents:
        raise UsageError(f"{name} holds no document (only blank lines): nothing to score")
    return documents


def texts_of(config, model, name, text):
    """What is scored on its own: each line (--per-line), each document (--per-document), or
    the whole text."""
    if config.per_line:
        return lines_of(text)
    if config.per_document:
        return documents_of(model, name, text)
    return [text]


def classify(config, model, name, text):
    """--classify: a list of one dict per text (the whole text, each line or each document):
    text, label (the most likely), log_prob (under it), runner_up and its log_prob, and
    log_probs (every label's)."""
    import numpy as np

    log_prior = model.label_log_prior(config.prior)
    texts = texts_of(config, model, name, text)
    scores, names = model.classify(
        texts, config.batch_size, config.prime, config.unknown, documents=config.per_document
    )
    joint = scores + log_prior
    # log p(label | text): the joint normalised over the labels (log-sum-exp, kept finite).
    top = joint.max(axis=1, keepdims=True)
    posterior = joint - (top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True)))
    results = []
    for text, row, chance in zip(texts, scores, posterior):
        order = chance.argsort()[::-1]
        best, second = order[0], order[min(1, len(order) - 1)]
        results.append(
            {
                "text": text,
                "label": names[best],
                "probability": float(np.exp(chance[best])),
                "log_prob": float(row[best]),
                "runner_up": names[second],
                "runner_up_probability": float(np.exp(chance[second])),
                "runner_up_log_prob": float(row[second]),
                "log_probs": dict(zip(names, map(float, row))),
                "log_prior": dict(zip(names, map(float, log_prior))),
            }
        )
    return results


def number(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def document_start(text, width=60):
    """A document's first line, cut to `width` characters, with ... when there is more."""
    first = text.split("\n", 1)[0]
    if len(first) > width or first != text:
        return first[:width].rstrip() + " ..."
    return first


def report(config, result, model):
    """The lines `main` prints for a result of `score`."""
    has_unk = model.vocabulary.unknown_token is not None
    if config.classify:
        for line in result:
            if config.json:
                yield json.dumps(line, ensure_ascii=False)
            else:
                yield (
                    f"{line['label']}\t{line['probability']:.3f}\t{line['log_prob']:.4f}\t"
                    f"{line['runner_up']}\t{line['runner_up_probability']:.3f}\t"
                    f"{line['runner_up_log_prob']:.4f}\t{document_start(line['text'])}"
                )
        return
    if config.per_line or config.per_document:
        keys = ["text", "tokens", "characters", "log_prob", "bits_per_char"]
        keys += ["unknown_tokens"] if has_unk else []
        for line in result:
            if config.json:
                yield json.dumps({k: line[k] for k in keys}, ensure_ascii=False)
            else:
                text = document_start(line["text"]) if config.per_document else line["text"]
                yield (
                    f"{line['log_prob']:.4f}\t{line['tokens']}\t"
                    f"{number(line['bits_per_char'])}\t{text}"
                )
        return
    if config.json:
        yield json.dumps(result, ensure_ascii=False)
        return
    unit = model.unit
    counts = f"{result['characters']} characters"
    if model.level != "char":
        counts += f", {result['tokens']} {unit}s"
    streams = f"{result['streams']} stream{'s' if result['streams'] > 1 else ''}"
    yield f"{result['file']}: {counts}, {streams}"
    yield f"log-probability: {result['log_prob']:.4f} nats"
    yield f"nats per {unit}: {number(result['nats_per_token'])}"
    yield f"bits per character: {number(result['bits_per_char'])}"
    yield f"perplexity: {number(result['perplexity'])} (per {unit})"
    if has_unk:
        share = result["unknown_tokens"] / result["tokens"]
        yield f"<unk>: {result['unknown_tokens']} of the {unit}s ({share:.2%})"
    if result["skipped"]:
        yield f"skipped: {result['skipped']} characters outside the vocabulary (--unknown skip)"


@cli_errors
def main(argv=None):
    config = resolve_arguments(ScoreConfig(**vars(build_parser().parse_args(argv))))
    result, model = score(config)
    for line in report(config, result, model):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
