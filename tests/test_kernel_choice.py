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
    entry = json.loads(measuring.read_text())[kernel_choice.entry_key("key-a", OPTIONS)]
    assert entry["choice"] == "TF ops"

    again = kernel_choice.choose(OPTIONS, timer, "key-a", measuring)
    assert again.candidate == TF_OPS and again.cached and timer.calls == 1  # nothing measured
    assert "earlier measurement" in again.line()

    other = Timer({"C++ ops": 40_000.0, "TF ops": 30_000.0, "stock Keras": 20_000.0})
    assert kernel_choice.choose(OPTIONS, other, "key-b", measuring).candidate == NATIVE
    assert other.calls == 1  # another key measures again
    assert set(json.loads(measuring.read_text())) == {
        "key-a/float32/C++ ops,TF ops,stock Keras",
        "key-b/float32/C++ ops,TF ops,stock Keras",
    }


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
    measuring.write_text(json.dumps({kernel_choice.entry_key("key", OPTIONS): {"choice": 7}}))
    assert kernel_choice.choose(OPTIONS, timer, "key", measuring).candidate == STOCK
    assert timer.calls == 2
    damaged = json.loads(measuring.read_text())
    damaged[kernel_choice.entry_key("key", OPTIONS)]["rates"] = {"stock Keras": "fast"}
    measuring.write_text(json.dumps(damaged))
    assert kernel_choice.choose(OPTIONS, timer, "key", measuring).candidate == STOCK
    assert timer.calls == 3


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

    measured = kernel_choice.time_training(
        trace, run_step, OPTIONS, "batch", min_rounds=2, max_rounds=2
    )
    assert traced == ["C++ ops", "TF ops"]
    assert ran.count("step of C++ ops") == ran.count("step of TF ops") == 3  # 1 warm-up, 2 timed
    assert measured.train_steps == {"C++ ops": "step of C++ ops", "TF ops": "step of TF ops"}
    assert measured.failures == {"stock Keras": "ValueError: no stock layer here"}
    assert measured.rates["C++ ops"] > measured.rates["TF ops"] > 0


def test_a_run_without_the_cpp_ops_neither_answers_for_nor_overwrites_the_default(measuring):
    """Issue 28: a default run chose the C++ ops; a run without them (TEXTGEN_NATIVE_OPS=0, a
    failed build) measured the rest and overwrote the entry; the next default run read "stock
    Keras" from it and never measured the C++ ops again."""
    rates = {"C++ ops": 62_231.0, "TF ops": 34_618.0, "stock Keras": 32_719.0}
    default = kernel_choice.candidates("lstm", native_available=True)
    first = Timer(rates)
    assert kernel_choice.choose(default, first, "key", measuring).candidate == NATIVE
    default_entry = json.loads(measuring.read_text())[kernel_choice.entry_key("key", default)]

    forced = kernel_choice.candidates("lstm", native_available=False)
    second = Timer({"TF ops": 47_829.0, "stock Keras": 54_734.0})
    choice = kernel_choice.choose(forced, second, "key", measuring)
    assert choice.candidate == STOCK and not choice.cached and second.calls == 1
    entries = json.loads(measuring.read_text())
    assert entries[kernel_choice.entry_key("key", default)] == default_entry  # not rewritten
    assert entries[kernel_choice.entry_key("key", forced)]["choice"] == "stock Keras"

    third = Timer(rates)
    again = kernel_choice.choose(default, third, "key", measuring)
    assert again.candidate == NATIVE and again.cached and third.calls == 0
    assert "C++ ops 62,231" in again.line("char")
    # and the forced run, repeated, reads its own answer
    assert kernel_choice.choose(forced, third, "key", measuring).candidate == STOCK
    assert third.calls == 0


def test_the_key_holds_the_candidates_and_the_precision():
    assert kernel_choice.entry_key("k", OPTIONS) == "k/float32/C++ ops,TF ops,stock Keras"
    assert kernel_choice.entry_key("k", [STOCK, TF_OPS]) == "k/float32/TF ops,stock Keras"
    assert kernel_choice.entry_key("k", OPTIONS, "bfloat16").startswith("k/bfloat16/")


def test_an_old_format_entry_is_measured_again(measuring):
    """Entries cached before the candidates were in the key sit under the bare key: the file
    still loads, they are never taken for a candidate set, and the generation loop's entries
    beside them are kept."""
    old = {
        "key": {"choice": "stock Keras", "rates": {"TF ops": 47_829, "stock Keras": 54_734}},
        "generation-key": {"xla_max_streams": 64, "rates": {"8": [1, 2]}},
    }
    measuring.write_text(json.dumps(old))
    timer = Timer({"C++ ops": 3.0, "TF ops": 2.0, "stock Keras": 1.0})
    choice = kernel_choice.choose(OPTIONS, timer, "key", measuring)
    assert choice.candidate == NATIVE and not choice.cached and timer.calls == 1
    entries = json.loads(measuring.read_text())
    assert entries["key"] == old["key"] and entries["generation-key"] == old["generation-key"]
    new = entries[kernel_choice.entry_key("key", OPTIONS)]
    assert new["candidates"] == ["C++ ops", "TF ops", "stock Keras"]
    assert new["precision"] == "float32"

    # an entry under the new key that does not name its candidates is not trusted either
    measuring.write_text(
        json.dumps({kernel_choice.entry_key("key", OPTIONS): {"choice": "stock Keras"}})
    )
    assert kernel_choice.choose(OPTIONS, timer, "key", measuring).candidate == NATIVE
    assert timer.calls == 2


class FakeSteps:
    """A fake clock and `run_step`: each call of a candidate's step takes the next of its scripted
    seconds (the first is the warm-up) and trains 1000 units."""

    def __init__(self, seconds):
        self.now, self.order = 0.0, []
        self.seconds = {name: list(times) for name, times in seconds.items()}

    def clock(self):
        return self.now

    def trace(self, option):
        return option.name

    def run_step(self, step, batch):
        times = self.seconds[step]
        self.now += times.pop(0) if len(times) > 1 else times[0]
        self.order.append(step)
        return 1000

    def measure(self, **kwargs):
        return kernel_choice.time_training(
            self.trace, self.run_step, OPTIONS, "batch", clock=self.clock, **kwargs
        )


def test_a_clear_leader_stops_after_the_minimum_rounds():
    fake = FakeSteps({"C++ ops": [5.0, 1.0], "TF ops": [5.0, 2.0], "stock Keras": [5.0, 3.0]})
    measured = fake.measure()
    assert measured.rounds == kernel_choice.MIN_ROUNDS == 3 and measured.stable
    assert measured.rates == {"C++ ops": 1000.0, "TF ops": 500.0, "stock Keras": 1000 / 3}
    # the warm-ups in order, then each round starts one candidate further on
    assert fake.order[3:] == [
        "C++ ops", "TF ops", "stock Keras",
        "TF ops", "stock Keras", "C++ ops",
        "stock Keras", "C++ ops", "TF ops",
    ]  # fmt: skip


def test_a_slowed_step_does_not_decide_and_the_leader_must_hold():
    """Round 1 slows the C++ ops (TF ops lead); from round 2 they are fastest, but their spread
    (median far below best) counts as noise until their median catches up: round 2 is not
    clear, rounds 3 and 4 are, so it stops after 4 rounds on the C++ ops."""
    fake = FakeSteps({"C++ ops": [5.0, 2.0, 1.0], "TF ops": [5.0, 1.25], "stock Keras": [5.0, 2.0]})
    measured = fake.measure()
    assert max(measured.rates, key=measured.rates.get) == "C++ ops"
    assert measured.rounds == 4 and measured.stable


def test_a_tie_runs_to_the_round_cap_and_says_so(measuring):
    fake = FakeSteps({"C++ ops": [5.0, 1.0], "TF ops": [5.0, 1.02], "stock Keras": [5.0, 3.0]})
    measured = fake.measure(max_rounds=6, budget=100.0)
    assert measured.rounds == 6 and not measured.stable
    choice = kernel_choice.choose(OPTIONS, lambda options: measured, "key", measuring)
    assert choice.candidate == NATIVE
    assert "best of 6 rounds, no clear leader within the round or time cap" in choice.line()


def test_a_lead_within_the_noise_is_not_a_ranking():
    """The C++ ops' best step is 15 % ahead of the TF ops', but their steps scatter by more
    (every other one takes 1.6 s): the lead never holds two rounds running, so the rounds go on
    to the cap, and the best rates decide."""
    fake = FakeSteps(
        {"C++ ops": [5.0] + [1.0, 1.6] * 6, "TF ops": [5.0, 1.15], "stock Keras": [5.0, 3.0]}
    )
    measured = fake.measure(max_rounds=8, budget=100.0)
    assert measured.rounds == 8 and not measured.stable
    assert max(measured.rates, key=measured.rates.get) == "C++ ops"


def test_the_budget_bounds_the_timed_rounds():
    """A tie with 1 s steps: 3.06 s a round, so a 7 s budget ends after the third round (the
    first to end past it), well before the round cap."""
    fake = FakeSteps({"C++ ops": [5.0, 1.0], "TF ops": [5.0, 1.02], "stock Keras": [5.0, 1.04]})
    measured = fake.measure(budget=7.0)
    assert measured.rounds == 3 and not measured.stable
    timed = fake.now - 15.0  # the warm-ups come before the budget starts
    assert 7.0 <= timed <= 7.0 + 3.06 + 1e-9


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
    # (the bfloat16 TF-op kernel fails too; the C++ ops bf16 may win where the CPU has bf16)
    assert trainer.kernel.candidate in (NATIVE, STOCK, kernel_choice.NATIVE_BF16)
    assert result.global_step == 2


def test_forced_flags_measure_nothing(tiny_config, measuring):
    tiny_config.max_steps = 1
    tiny_config.fused = "off"
    log = []
    trainer, _ = _train(tiny_config, log)
    assert not any(line.startswith("recurrent kernel:") for line in log)
    assert trainer.model.recurrent_stack.fused is False
    assert not measuring.exists()


def test_a_run_without_the_cpp_ops_keeps_the_default_entry_in_a_real_run(
    tiny_config, measuring, monkeypatch, tmp_path
):
    """The issue's sequence on real training runs: default, TEXTGEN_NATIVE_OPS=0, default. The
    forced run measures its own candidates and writes beside the default's entry; the third run
    reads the first run's answer, whatever the timings were."""
    tiny_config.max_steps = 1
    tiny_config.out = str(tmp_path / "first")
    first, _ = _train(tiny_config, [])
    assert not first.kernel.cached and "C++ ops" in first.kernel.rates
    entries = json.loads(measuring.read_text())
    assert len(entries) == 1

    monkeypatch.setenv("TEXTGEN_NATIVE_OPS", "0")
    tiny_config.out = str(tmp_path / "forced")
    log = []
    forced, _ = _train(tiny_config, log)
    line = next(line for line in log if line.startswith("recurrent kernel:"))
    assert "fastest measured here" in line and "C++ ops" not in line
    after = json.loads(measuring.read_text())
    assert len(after) == 2 and all(after[key] == entry for key, entry in entries.items())

    monkeypatch.delenv("TEXTGEN_NATIVE_OPS")
    tiny_config.out = str(tmp_path / "third")
    log = []
    third, _ = _train(tiny_config, log)
    assert third.kernel.cached and third.kernel.candidate == first.kernel.candidate
    assert any("earlier measurement" in line for line in log)
