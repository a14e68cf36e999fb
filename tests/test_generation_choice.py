"""Generation takes XLA's loop below a measured batch size, the graph loop from it
(textgen.generation.loop_choice)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError
from textgen.generation import loop_choice
from textgen.generation.saved_model import export_saved_model
from textgen.network.language_model import LanguageModel
from textgen.network.lean_language_model import LeanLanguageModel, lean_weights


@pytest.fixture
def model():
    keras.utils.set_random_seed(3)
    model = LanguageModel(
        Vocabulary.from_characters("abcdefgh \n"), num_layers=2, hidden_size=16, embedding_size=8
    )
    model.build()
    return model


@pytest.fixture
def measuring(monkeypatch, kernel_choice_cache):
    """Generation measures (conftest presets XLA's loop for every other test) into this test's
    own cache file."""
    monkeypatch.delenv("TEXTGEN_GENERATION", raising=False)
    return kernel_choice_cache


def _generate(model, batch, **lean_options):
    weights = {name: tf.constant(value) for name, value in lean_weights(model).items()}
    lean = LeanLanguageModel(
        weights, model.cell, model.num_layers, model.hidden_size, **lean_options
    )
    prime = tf.zeros([batch, 2], tf.int32)
    return lean.generate_ids(prime, tf.constant(40), tf.constant(1.0), tf.constant(0), 7).numpy()


def test_batches_from_the_limit_take_the_graph_loop(model):
    """Seeded random draws differ between XLA's and TensorFlow's kernels, which shows the loop
    each batch size took."""
    for batch in (1, 3):
        xla = _generate(model, batch, xla=True)
        graph = _generate(model, batch, xla=False)
        assert not np.array_equal(xla, graph)
        chosen = _generate(model, batch, xla=True, xla_max_streams=tf.constant(3))
        np.testing.assert_array_equal(chosen, xla if batch < 3 else graph)


def test_measures_once_then_reads_the_cache(model, measuring, monkeypatch, capsys):
    calls = []

    def fake_measure(measured, precision="float32"):
        calls.append(measured)
        return {8: (100.0, 50.0), 64: (100.0, 200.0)}, 64

    monkeypatch.setattr(loop_choice, "measure", fake_measure)
    assert loop_choice.xla_max_streams(model) == 64
    assert "the XLA-compiled loop below 64 streams, the graph loop from 64" in (
        capsys.readouterr().err
    )
    assert loop_choice.xla_max_streams(model) == 64 and len(calls) == 1
    assert capsys.readouterr().err == ""  # a cached answer prints nothing
    entry = json.loads(measuring.read_text())[loop_choice.model_key(model)]
    assert entry["xla_max_streams"] == 64


def test_a_real_measurement_stops_where_the_graph_loop_wins(model, measuring, monkeypatch):
    monkeypatch.setattr(loop_choice, "SIZES", (1,))
    monkeypatch.setattr(loop_choice, "STEPS", 8)
    rates, limit = loop_choice.measure(model)
    assert set(rates) == {1}
    assert all(xla > 0 and graph > 0 for xla, graph in rates.values())
    winner = [s for s, (x, g) in rates.items() if g > loop_choice.MARGIN * x]
    assert limit == (winner[0] if winner else loop_choice.ALWAYS_XLA)


def test_the_environment_presets_the_loop(model, monkeypatch):
    monkeypatch.setenv("TEXTGEN_GENERATION", "graph")
    assert loop_choice.xla_max_streams(model) == 0
    monkeypatch.setenv("TEXTGEN_GENERATION", "xla")
    assert loop_choice.xla_max_streams(model) == loop_choice.ALWAYS_XLA
    monkeypatch.setenv("TEXTGEN_GENERATION", "fast")
    with pytest.raises(UsageError, match="TEXTGEN_GENERATION must be measure, xla or graph"):
        loop_choice.xla_max_streams(model)


def test_the_saved_model_carries_the_exporting_machines_choice(model, monkeypatch, tmp_path):
    monkeypatch.setattr(
        loop_choice, "xla_max_streams", lambda model, path=None, precision="float32": 2
    )
    export_saved_model(model, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    assert int(loaded.xla_max_streams.numpy()) == 2
    config = json.loads(loaded.config_json.numpy().decode())
    assert config["generation_loop"] == loop_choice.describe(2)
    # The in-process sampler takes the same loop, here the graph loop from 2 streams: the same
    # seeded text (the XLA side is tests/test_export.py's).
    for batch in (2,):
        out = loaded.signatures["generate"](
            prompt=tf.constant(["ab"] * batch),
            length=tf.constant(30),
            temperature=tf.constant(1.0),
            top_k=tf.constant(0),
            seed=tf.constant(5),
        )["text"].numpy()
        here = model.sample(prime="ab", length=30, temperature=1.0, seed=5, num_samples=batch)
        assert [text.decode() for text in out] == list(here)


class FakeClock:
    """A clock that each timed call advances by the next of its durations."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def caller(self, durations):
        durations = iter(durations)

        def run():
            self.now += next(durations)

        return run


def test_timing_goes_on_until_the_gap_exceeds_the_noise():
    clock = FakeClock()
    # A clear 2x gap with steady times: decided after the minimum of three rounds.
    fast, slow = clock.caller([9.0] + [1.0] * 20), clock.caller([9.0] + [2.0] * 20)
    assert loop_choice.compare(fast, slow, clock=clock) == (1.0, 2.0, 3)
    # A 4% gap among 20% swings: every round is used, and the best times are compared.
    swings = [1.0, 1.2, 1.25, 1.0, 1.3, 1.2] * 4
    first = clock.caller([9.0] + swings)
    second = clock.caller([9.0] + [1.04 * t for t in swings])
    best_first, best_second, rounds = loop_choice.compare(
        first, second, max_rounds=12, budget=1e9, clock=clock
    )
    assert rounds == 12 and best_first == 1.0 and best_second == pytest.approx(1.04)
    # The noise settles: the rounds stop once the gap stands out, before the maximum.
    settling = clock.caller([9.0, 1.0, 1.5, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    steady = clock.caller([9.0] + [1.2] * 9)
    assert loop_choice.compare(settling, steady, budget=1e9, clock=clock)[2] == 5
    # The time budget ends an undecided comparison.
    first, second = clock.caller([0.0] + swings), clock.caller([0.0] + swings)
    assert loop_choice.compare(first, second, budget=5.0, clock=clock)[2] == 3
