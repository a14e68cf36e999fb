"""The text model shipped in data/models/shakespeare: weights only, found with no RUN_DIR, and
still as good on tiny-shakespeare's held-out tail as when it was packaged."""

import json
import os

import pytest

from textgen import resources
from textgen.corpus.reading import read_text
from textgen.corpus.stream_batches import validation_length
from textgen.network.language_model import LanguageModel
from textgen.training.run_directory import RunDirectory

MODEL = resources.bundled_model("shakespeare")
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="no bundled text model here")


def evaluation():
    with open(MODEL / "eval.json", encoding="utf-8") as f:
        return json.load(f)


def test_it_is_a_2x256_lstm_on_65_characters_with_weights_only():
    run = RunDirectory(MODEL)
    config = run.load_config()
    assert (config["cell"], config["num_layers"], config["hidden_size"]) == ("lstm", 2, 256)
    assert len(run.load_vocabulary()) == 65
    groups, progress = run.load_checkpoint()
    assert set(groups) == {"model"}  # no optimizer state, no training states
    assert progress["global_step"] == evaluation()["steps"]
    size = sum(os.path.getsize(MODEL / name) for name in os.listdir(MODEL))
    assert 3.3e6 < size < 3.8e6


def test_its_validation_loss_on_the_held_out_tail_holds():
    """The bounded check eval.json records (the tail's first characters, in a few streams from
    zero state), recomputed: a change to loading, the kernels or the vocabulary that made the
    model worse shows here. 1.5 nats/char is what the 10-minute default run reaches."""
    check = evaluation()["check"]
    config = RunDirectory(MODEL).load_config()
    text = read_text(resources.default_corpus())
    tail = text[len(text) - validation_length(len(text), config["val_fraction"]) :]
    model = LanguageModel.from_run_directory(MODEL)
    score = model.score(tail[: check["characters"]], streams=check["streams"])
    assert score["nats_per_token"] == pytest.approx(check["nats_per_char"], abs=0.01)
    assert evaluation()["val_nats_per_char"] < 1.5
