"""`--fused auto` times the recurrent kernels and trains on the fastest
(textgen.network.kernel_choice)."""

import json

import numpy as np
import pytest

from textgen.errors import UsageError
from textgen.network import fused_kernels, kernel_choice
from textgen.network.kernel_choice import NATIVE, STOCK, TF_OPS
from textgen.training.text_trainer import TextTrainer

OPTIONS = [NATIVE, TF_OPS, STOCK]


@pytest.fixture
def measuring(monkeypatch, kernel_choice_cache):
    """Auto measures (conftest presets the C++ ops for every other test); the cache is this
    test's own file."""
    monkeypatch.delenv("TEXTGEN_KERNEL", raising=False)
    return kernel_choice_cache


class Timer:
    """A stub `measure`: fixed rates, some candidates failing, and a count of its calls."""

    def __init__(self, rates, failures=None):
        self.rates, self.failures, self.calls = rates, failures or {}, 0

    def __call__(self, options):
        self.calls += 1
        names = {option.name for option in options}
        return kernel_choice.Measurement(
            {name: rate for name, rate in self.rates.items() if name in names},
            dict(self.failures),
            {name: f"{name}'s step" for name in names if name in self.rates},
        )


def test_picks_the_fastest_and_caches_it(measuring):
    timer = Timer({"C++ ops": 15_000.0, "TF ops": 31_000.0, "stock Keras": 22_000.0})
    choice = kernel_choice.choose(OPTIONS, timer, "key-a", measuring)
    assert choice.candidate == TF_OPS and not choice.cached and timer.calls == 1
    assert choice.train_step == "TF ops's step"  # the winner's traced step comes back
    assert "TF ops, the fastest measured here" in choice.line("char")
    assert "C++ ops 15,000 char/s" in choice.line("char")
    assert json.loads(measuring.read_text())["key-a"]["choice"] == "TF ops"

    again = kernel_choice.choose(OPTIONS, timer, "key-a", measuring)
    assert again.candidate == TF_OPS and again.cached and timer.calls == 1  # nothing measured
    assert "earlier measurement" in again.line()

    other = Timer({"C++ ops": 40_000.0, "TF ops": 30_000.0, "stock Keras": 20_000.0})
    assert kernel_choice.choose(OPTIONS, other, "key-b", measuring).candidate == NATIVE
    assert other.calls == 1  # another key measures again
    assert set(json.loads(measuring.read_text())) == {"key-a", "key-b"}


def test_a_candidate_that_fails_is_left_out(measuring):
    timer = Timer({"TF ops": 10.0, "stock Keras": 12.0}, {"C++ ops": "NotFoundError: no ops"})
    choice = kernel_choice.choose(OPTIONS, timer, "key", measuring)
    assert choice.candidate == STOCK
    assert "C++ ops failed (NotFoundError: no ops)" in choice.line()


def test_all_failing_falls_back_to_the_first_option_and_caches_nothing(measuring):
    timer = Timer({}, {name: "boom" for name in ("C++ ops", "TF ops", "stock Keras")})
    assert kernel_choice.choose(OPTIONS, timer, "key", measuring).candidate == NATIVE
    assert not measuring.exists()


def test_a_damaged_cache_only_costs_a_measurement(measuring):
    measuring.write_bytes(b"\x00{not json")
    timer = Timer({"C++ ops": 1.0, "TF ops": 2.0, "stock Keras": 3.0})
    assert kernel_choice.choose(OPTIONS, timer, "key", measuring).candidate == STOCK
    assert timer.calls == 1
    measuring.write_text(json.dumps({"key": {"choice": "no such kernel"}}))
    assert kernel_choice.choose(OPTIONS, timer, "key", measuring).candidate == STOCK
    assert timer.calls == 2


def test_the_environment_presets_a_kernel(measuring, monkeypatch):
    timer = Timer({"C++ ops": 1.0, "TF ops": 2.0, "stock Keras": 3.0})
    monkeypatch.setenv("TEXTGEN_KERNEL", "tf")
    choice = kernel_choice.choose(OPTIONS, timer, "key", measuring)
    assert choice.candidate == TF_OPS and timer.calls == 0 and "not measured" in choice.line()
    monkeypatch.setenv("TEXTGEN_KERNEL", "native")  # a GRU has no C++ ops: the TF-op kernel
    assert kernel_choice.choose([TF_OPS, STOCK], timer, "key", measuring).candidate == TF_OPS
    monkeypatch.setenv("TEXTGEN_KERNEL", "fastest")
    with pytest.raises(UsageError, match="TEXTGEN_KERNEL must be measure, native, tf or stock"):
        kernel_choice.choose(OPTIONS, timer, "key", measuring)


def test_candidates_per_cell():
    assert kernel_choice.candidates("lstm", True) == [NATIVE, TF_OPS, STOCK]
    assert kernel_choice.candidates("lstm", False) == [TF_OPS, STOCK]
    assert kernel_choice.candidates("gru", True) == [TF_OPS, STOCK]


def test_time_training_returns_what_it_measured():
    """It traces each candidate once, runs warm-up and timed steps through the callables it was
    given, and hands back rates, failures and the traced steps; it holds no loop to write to."""
    traced, ran = [], []

    def trace(option):
        if option is STOCK:
            raise ValueError("no stock layer here")
        traced.append(option.name)
        return f"step of {option.name}"

    def run_step(step, batch):
        ran.append(step)
        return 1000 if step == "step of C++ ops" else 10

    measured = kernel_choice.time_training(trace, run_step, OPTIONS, "batch", rounds=2)
    assert traced == ["C++ ops", "TF ops"]
    assert ran.count("step of C++ ops") == ran.count("step of TF ops") == 3  # 1 warm-up, 2 timed
    assert measured.train_steps == {"C++ ops": "step of C++ ops", "TF ops": "step of TF ops"}
    assert measured.failures == {"stock Keras": "ValueError: no stock layer here"}
    assert measured.rates["C++ ops"] > measured.rates["TF ops"] > 0


def test_the_key_changes_with_the_shape():
    assert kernel_choice.cache_key(cell="lstm", batch_size=8) == kernel_choice.cache_key(
        batch_size=8, cell="lstm"
    )
    assert kernel_choice.cache_key(cell="lstm", batch_size=8) != kernel_choice.cache_key(
        cell="lstm", batch_size=16
    )


def _train(config, log):
    trainer = TextTrainer(config, log=log.append, progress_bar=False)
    trainer.prepare()
    return trainer, trainer.train()


def test_measuring_leaves_the_run_as_if_nothing_was_measured(tiny_config, measuring, tmp_path):
    """A run that measures all three kernels trains exactly like a run of the same kernel that
    reads the choice from the cache: the measured steps' updates are all undone."""
    tiny_config.max_steps = 6
    tiny_config.dropout = 0.2  # the dropout generators' states are put back too
    first_log = []
    measured, first = _train(tiny_config, first_log)
    line = next(line for line in first_log if line.startswith("recurrent kernel:"))
    assert "fastest measured here" in line
    for name in ("C++ ops", "TF ops", "stock Keras"):
        assert f"{name} " in line
    chosen = measured.kernel.candidate
    stack = measured.model.recurrent_stack
    assert (stack.fused, stack.use_native_ops) == (chosen.fused, chosen.native)

    tiny_config.out = str(tmp_path / "second")
    second_log = []
    cached, second = _train(tiny_config, second_log)
    assert cached.kernel.cached and cached.kernel.candidate == chosen
    assert any("earlier measurement" in line for line in second_log)
    np.testing.assert_array_equal(first.step_losses, second.step_losses)
    assert first.final_val_loss == second.final_val_loss


def test_a_kernel_that_raises_is_skipped_in_a_real_run(tiny_config, measuring, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("this kernel cannot run here")

    monkeypatch.setattr(fused_kernels, "lstm_layer_tf", broken)
    tiny_config.max_steps = 2
    log = []
    trainer, result = _train(tiny_config, log)
    line = next(line for line in log if line.startswith("recurrent kernel:"))
    assert "TF ops failed (RuntimeError: this kernel cannot run here)" in line
    assert trainer.kernel.candidate in (NATIVE, STOCK)
    assert result.global_step == 2


def test_forced_flags_measure_nothing(tiny_config, measuring):
    tiny_config.max_steps = 1
    tiny_config.fused = "off"
    log = []
    trainer, _ = _train(tiny_config, log)
    assert not any(line.startswith("recurrent kernel:") for line in log)
    assert trainer.model.recurrent_stack.fused is False
    assert not measuring.exists()
