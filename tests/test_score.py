"""textgen.score: a text's log-probability is the sum of the log-softmax terms of the model's own
steps; the CLI, the Python API and the SavedModel's `score` signature (in a process that cannot
import textgen) agree; the trained text scores better than a shuffled one; bad input is one
line."""

import json
import math
import random

import numpy as np
import pytest
import tensorflow as tf

import textgen.score
from helpers import FAMISH_TEXT, one_error_line, run_main
from isolated_process import run_isolated
from textgen import resources
from textgen.corpus.vocabulary import Vocabulary
from textgen.generation import saved_model
from textgen.network.language_model import LanguageModel

TEXTS = ["First Citizen:", "Speak, speak.", "", "hear me€ speak"]


@pytest.fixture(scope="module")
def run_directory(train_tiny_run):
    """A 2-layer LSTM trained for 80 steps on a repetitive text: enough to know its order."""
    return train_tiny_run(
        "score_run",
        FAMISH_TEXT,
        hidden_size=64,
        embedding_size=16,
        num_layers=2,
        batch_size=8,
        seq_length=20,
        max_steps=80,
        learning_rate=1e-2,
        dropout=0.0,
        checkpoint_every=1000,
        export=False,
    )


@pytest.fixture(scope="module")
def model(run_directory):
    return LanguageModel.from_run_directory(run_directory)


def numpy_log_prob(model, text, prime=None):
    """Zero state, the prime's tokens (or the default prime) fed by `model.step`, then every
    token of `text` scored by a NumPy log-softmax of the step's logits."""
    context = model.encode(prime) if prime else [model.vocabulary.id(model.default_prime())]
    ids = model.encode(text)
    states = model.initial_states(1)
    total = 0.0
    for i, token in enumerate(list(context) + list(ids)):
        logits, states = model.step(tf.constant([token], tf.int32), states)
        if i + 1 >= len(context) and i + 1 < len(context) + len(ids):
            z = logits.numpy()[0].astype(np.float64)
            log_softmax = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
            total += log_softmax[ids[i + 1 - len(context)]]
    return total


def cli(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", _Stdin(stdin))
    return run_main(textgen.score.main, capsys, *argv)


class _Stdin:
    def __init__(self, text):
        import io

        self.buffer = io.BytesIO(text.encode("utf-8"))

    def isatty(self):
        return False


# ---- what a score is ----


def test_score_is_the_sum_of_log_softmax_terms_of_the_models_steps(model):
    text = "First Citizen:\nSpeak, speak."
    result = model.score(text)
    expected = numpy_log_prob(model, text)
    assert result["log_prob"] == pytest.approx(expected, rel=1e-5)
    assert (result["tokens"], result["characters"], result["streams"]) == (len(text),) * 2 + (1,)
    assert result["nats_per_token"] == pytest.approx(-expected / len(text), rel=1e-5)
    assert result["bits_per_char"] == pytest.approx(-expected / math.log(2) / len(text), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(-expected / len(text)), rel=1e-5)
    primed = model.score("Speak, speak.", prime="All:\n")
    assert primed["log_prob"] == pytest.approx(
        numpy_log_prob(model, "Speak, speak.", prime="All:\n"), rel=1e-5
    )
    each = model.score_each(["First Citizen:", "All:", ""], batch_size=2)
    for result, line in zip(each, ["First Citizen:", "All:"]):
        assert result["log_prob"] == pytest.approx(numpy_log_prob(model, line), rel=1e-5)
    assert (each[2]["log_prob"], each[2]["tokens"], each[2]["bits_per_char"]) == (0.0, 0, None)


def test_streams_are_contiguous_pieces_each_from_zero_state(model):
    """Stream k of B scores its piece from zero state, fed the token before the piece: the sum
    of scoring each piece so (the first after the default prime) is the streamed score."""
    text = FAMISH_TEXT[:203]
    streamed = model.score(text, streams=4)
    bounds = [k * len(text) // 4 for k in range(5)]
    pieces = [
        model.score(text[a:b], prime=text[a - 1] if a else None)["log_prob"]
        for a, b in zip(bounds, bounds[1:])
    ]
    assert streamed["streams"] == 4
    assert streamed["log_prob"] == pytest.approx(sum(pieces), rel=1e-5)
    exact = model.score(text, streams=1)["log_prob"]
    assert exact == pytest.approx(numpy_log_prob(model, text), rel=1e-5)
    # Three pieces start with less context than one pass gives them: a little worse, not much.
    assert streamed["log_prob"] < exact and streamed["log_prob"] > 1.2 * exact


def test_the_trained_text_scores_better_than_a_shuffled_one(model):
    text = FAMISH_TEXT[:600]
    characters = list(text)
    random.Random(0).shuffle(characters)
    trained = model.score(text)["bits_per_char"]
    shuffled = model.score("".join(characters))["bits_per_char"]
    assert trained < 0.75 * shuffled, (trained, shuffled)


def test_word_level_counts_unknown_words():
    vocabulary = Vocabulary(["<unk>", "\n", "a", "b", "."], unknown_token="<unk>")
    model = LanguageModel(
        vocabulary, num_layers=1, hidden_size=8, embedding_size=4, level="word", segmenter="regex"
    )
    model.build()
    result = model.score("a b zzz. a qq")
    assert (result["tokens"], result["unknown_tokens"], result["characters"]) == (6, 2, 13)
    assert model.score_each(["a zzz", "b"])[0]["unknown_tokens"] == 1


# ---- the CLI, the Python API and the SavedModel agree ----

ISOLATED_SCRIPT = r"""
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["score"](text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


@pytest.mark.integration
def test_cli_python_and_saved_model_agree(model, run_directory, tmp_path, capsys, monkeypatch):
    exported = saved_model.export_saved_model(model, str(tmp_path / "saved_model"))
    isolated = run_isolated(ISOLATED_SCRIPT, [exported, json.dumps(TEXTS)], tmp_path)
    python = model.score_each(TEXTS, unknown="skip")
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    status, out, err = cli(
        capsys, run_directory, lines, "--per-line", "--json", "--unknown", "skip"
    )
    assert status == 0, err
    from_cli = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in from_cli] == TEXTS
    for row, result in zip(from_cli, python):
        assert row["log_prob"] == pytest.approx(result["log_prob"], rel=1e-6, abs=1e-9)
        assert row["bits_per_char"] == result["bits_per_char"]
    assert isolated["tokens"] == [r["tokens"] for r in python] == [14, 13, 0, 13]
    assert isolated["characters"] == [r["characters"] for r in python]
    np.testing.assert_allclose(isolated["log_prob"], [r["log_prob"] for r in python], rtol=1e-4)
    # The whole file at once: the CLI prints what model.score returns.
    status, out, err = cli(capsys, run_directory, lines, "--json", "--exact", "--unknown", "skip")
    assert status == 0, err
    whole = json.loads(out)
    expected = model.score(lines.read_text(encoding="utf-8"), unknown="skip")
    assert whole["log_prob"] == pytest.approx(expected["log_prob"], rel=1e-6)
    assert (whole["skipped"], whole["streams"], whole["file"]) == (1, 1, str(lines))


# ---- output ----


def test_plain_output(run_directory, tmp_path, capsys, monkeypatch):
    status, out, err = cli(
        capsys, run_directory, "-", stdin=FAMISH_TEXT[:200], monkeypatch=monkeypatch
    )
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "standard input: 200 characters, 1 stream"
    assert lines[1].startswith("log-probability: -") and lines[1].endswith(" nats")
    assert [line.split(":")[0] for line in lines[2:]] == [
        "nats per character",
        "bits per character",
        "perplexity",
    ]
    status, out, err = cli(
        capsys, run_directory, "--per-line", stdin="All:\n\nSpeak.\n", monkeypatch=monkeypatch
    )
    rows = [line.split("\t") for line in out.splitlines()]
    assert [(row[1], row[3]) for row in rows] == [("4", "All:"), ("0", ""), ("6", "Speak.")]
    assert float(rows[0][0]) < 0 and float(rows[0][2]) > 0 and rows[1][2] == "n/a"


def test_without_run_dir_the_bundled_model_scores(run_directory, tmp_path, capsys, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text("All:\n", encoding="utf-8")
    monkeypatch.setattr(resources, "bundled_model", lambda name: tmp_path / "no" / name)
    message = one_error_line(*cli(capsys, text)[::2])
    assert "bundled model" in message and "shakespeare" in message and "RUN_DIR" in message
    monkeypatch.setattr(resources, "bundled_model", lambda name: run_directory)
    status, out, err = cli(capsys, text, "--json")
    assert status == 0, err
    assert json.loads(out)["tokens"] == 5


# ---- bad input: one line ----


def test_a_character_outside_the_vocabulary_names_line_and_column(run_directory, tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_text("All:\nSpe#ak\n", encoding="utf-8")
    message = one_error_line(*cli(capsys, run_directory, path)[::2])
    assert f"{path}: line 2, column 4" in message and "'#'" in message
    assert "--unknown skip" in message
    message = one_error_line(*cli(capsys, run_directory, path, "--per-line")[::2])
    assert "line 2, column 4" in message
    status, out, err = cli(capsys, run_directory, path, "--unknown", "skip", "--json")
    assert status == 0 and json.loads(out)["skipped"] == 1


@pytest.mark.parametrize(
    "content, argv, words",
    [
        ("", (), "is empty"),
        (None, (), "does not exist"),
        ("All:", ("--exact", "--streams", "4"), "--exact is one stream"),
        ("All:", ("--batch-size", "0"), "--batch-size must be a positive"),
        ("All:", ("--prime", "€"), "--prime"),
        (b"All\xff:", (), "line 1, column 4, byte offset 3"),
    ],
)
def test_bad_input_is_one_line(run_directory, tmp_path, capsys, content, argv, words):
    path = tmp_path / "input.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    message = one_error_line(*cli(capsys, run_directory, path, *argv)[::2])
    assert words in message
