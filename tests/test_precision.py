"""`--precision auto|float32|bfloat16`: bfloat16 matmuls, float32 everything else
(textgen.network.precision)."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import TINY_RUN_FLAGS, checkpoint_arrays, one_error_line, run_main
from textgen import train as train_cli
from textgen.network import kernel_choice, native_ops, precision
from textgen.network.kernel_choice import NATIVE, NATIVE_BF16, STOCK, TF_OPS, TF_OPS_BF16
from textgen.network.language_model import LanguageModel
from textgen.network.recurrent_stack import RecurrentStack
from textgen.training import loop
from textgen.training.text_trainer import TextTrainer


def test_native_bfloat16_reads_the_cpu_flags():
    assert precision.native_bfloat16("fpu sse2 avx2 avx512f avx512_bf16 amx_tile")
    assert precision.native_bfloat16("fp asimd bf16 i8mm")  # Arm's Features line
    assert precision.native_bfloat16("avx512f amx_bf16 amx_tile")
    assert not precision.native_bfloat16("fpu sse2 avx2 fma avx512f avx512_vnni")


def test_candidates_per_precision():
    assert kernel_choice.candidates("lstm", True, "float32") == [NATIVE, TF_OPS, STOCK]
    # Asked for, bfloat16 is what runs, with or without the instructions; no stock bf16 layers.
    assert kernel_choice.candidates("lstm", True, "bfloat16") == [NATIVE_BF16, TF_OPS_BF16]
    assert kernel_choice.candidates("gru", True, "bfloat16") == [TF_OPS_BF16]
    assert kernel_choice.candidates("lstm", False, "bfloat16") == [TF_OPS_BF16]


def test_auto_trains_in_float32_until_the_defaults_use_bfloat16s_speed():
    assert precision.training_precision("auto") == "float32"
    assert precision.training_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="auto, float32, bfloat16"):
        precision.training_precision("half")


def test_a_preset_keeps_the_precision_asked_for(monkeypatch):
    monkeypatch.setenv("TEXTGEN_KERNEL", "native")
    assert kernel_choice.preset(kernel_choice.candidates("lstm", True, "float32")) == NATIVE
    bf16 = kernel_choice.candidates("lstm", True, "bfloat16")
    assert kernel_choice.preset(bf16) == NATIVE_BF16
    monkeypatch.setenv("TEXTGEN_KERNEL", "stock")  # no bfloat16 stock layers: the TF-op kernel
    assert kernel_choice.preset(bf16) == TF_OPS_BF16


def _stack_outputs(cell, precision_name, native, table):
    """Outputs and every gradient of a tiny RecurrentStack on fixed weights and inputs."""
    tf.keras.utils.set_random_seed(3)
    stack = RecurrentStack(cell, num_layers=2, hidden_size=16, fused=True)
    stack.build((None, None, 8))
    stack.use_native_ops = native
    stack.precision = precision_name
    rng = np.random.default_rng(0)
    embeddings = tf.Variable(rng.normal(size=(5, 8)).astype(np.float32))
    ids = tf.constant(rng.integers(0, 5, size=(4, 9)), tf.int32)  # 36 tokens > 5 rows
    with tf.GradientTape() as tape:
        if table:
            outputs, states = stack(ids, embeddings=embeddings)
        else:
            outputs, states = stack(tf.gather(embeddings, ids))
        loss = tf.reduce_sum(outputs * tf.sin(tf.range(16, dtype=tf.float32))) + tf.add_n(
            [tf.reduce_sum(s) for s in states]
        )
    variables = [embeddings, *stack.trainable_variables]
    return [outputs, *map(tf.convert_to_tensor, tape.gradient(loss, variables))]


KERNELS = [
    ("lstm", False, False),  # the TF-op kernel
    ("lstm", True, False),  # the C++ ops on the inputs
    ("lstm", True, True),  # the C++ ops on the embedding table
    ("gru", False, False),
    ("rnn", False, False),
]


@pytest.mark.parametrize("cell,native,table", KERNELS)
def test_bfloat16_kernels_compute_the_float32_function_to_bfloat16_accuracy(cell, native, table):
    if native and native_ops.lstm_ops() is None:
        pytest.skip("textgen's C++ ops did not build here")
    exact = _stack_outputs(cell, "float32", native, table)
    rounded = _stack_outputs(cell, "bfloat16", native, table)
    differences = []
    for a, b in zip(exact, rounded):
        a, b = np.asarray(a), np.asarray(b)
        scale = np.abs(a).max()
        # bfloat16 keeps 8 significant bits (relative error 2^-9 per product); summed over a
        # few steps and layers the outputs and gradients stay within a few percent.
        assert np.abs(a - b).max() <= 0.03 * scale, (cell, native, table)
        differences.append(np.abs(a - b).max() / scale)
    # ... and the bfloat16 path really ran: float32 would agree to about 1e-6.
    assert max(differences) > 1e-4


def test_the_output_layer_follows_the_stack_precision():
    model = LanguageModel(list("abcdef"), hidden_size=16, embedding_size=8, num_layers=1)
    model.build()
    x = tf.random.stateless_normal([2, 3, 16], seed=[1, 2])
    exact = model.logits(x)
    model.recurrent_stack.precision = "bfloat16"
    rounded = model.logits(x)
    assert rounded.dtype == tf.float32 and rounded.shape == exact.shape
    difference = float(tf.reduce_max(tf.abs(exact - rounded)))
    assert 0 < difference <= 0.03 * float(tf.reduce_max(tf.abs(exact)))


@pytest.mark.parametrize(
    "flags,fragments",
    [
        (["--precision", "half"], ["precision must be auto, float32 or bfloat16", "'half'"]),
        (
            ["--precision", "bfloat16", "--fused", "off"],
            ["--fused auto or on", "--precision float32"],
        ),
    ],
)
def test_a_bad_precision_is_one_line(capsys, tmp_path, flags, fragments):
    status, _, err = run_main(
        train_cli.main, capsys, "--out", tmp_path / "run", *TINY_RUN_FLAGS, *flags
    )
    one_error_line(status, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_bfloat16_trains_and_resumes_under_float32(tiny_config, monkeypatch):
    """A bfloat16 run's checkpoint holds float32 weights, which a float32 run resumes from; the
    bfloat16 losses follow the float32 ones."""
    monkeypatch.setattr(loop, "native_bfloat16", lambda: True)  # no emulation note in the log
    tiny_config.max_steps = 4
    tiny_config.precision = "float32"
    reference = TextTrainer(tiny_config, log=lambda message: None, progress_bar=False)
    reference.prepare()
    exact = reference.train().step_losses

    tiny_config.out = tiny_config.out + "-bf16"
    tiny_config.precision = "bfloat16"
    trainer = TextTrainer(tiny_config, log=lambda message: None, progress_bar=False)
    trainer.prepare()
    assert trainer.model.recurrent_stack.precision == "bfloat16"
    result = trainer.train()
    rounded = result.step_losses
    np.testing.assert_allclose(rounded, exact, rtol=0.02)
    assert not np.array_equal(rounded, exact)
    # Validation is the float32 model's loss, whatever precision trained it.
    trainer.model.recurrent_stack.precision = "float32"
    trainer.compile_steps()
    assert trainer.evaluate() == pytest.approx(result.final_val_loss, rel=1e-6)
    trainer.model.recurrent_stack.precision = "bfloat16"
    trainer.compile_steps()
    assert trainer.evaluate() != pytest.approx(result.final_val_loss, rel=1e-6)
    weights = checkpoint_arrays(tiny_config.out)
    assert all(array.dtype == np.float32 for array in weights.values() if array.dtype.kind == "f")

    tiny_config.max_steps = 6
    tiny_config.resume = True
    tiny_config.precision = "float32"
    resumed = TextTrainer(tiny_config, {"max_steps", "precision"}, lambda m: None, False)
    resumed.prepare()
    assert resumed.model.recurrent_stack.precision == "float32"
    result = resumed.train()
    assert result.global_step == 6 and np.all(np.isfinite(result.step_losses))


# ---- generation ----
def _random_model():
    model = LanguageModel(
        list("\n abcdefghijklmnopqrs"), num_layers=2, hidden_size=16, embedding_size=8
    )
    model.build()
    rng = np.random.default_rng(1)
    for variable in model.variables:
        variable.assign(rng.normal(0, 0.6, variable.shape).astype(np.float32))
    return model


def test_the_lean_step_computes_in_bfloat16_when_asked():
    from textgen.network.lean_language_model import LeanLanguageModel, lean_weights

    model = _random_model()
    weights = {name: tf.constant(value) for name, value in lean_weights(model).items()}
    lean = LeanLanguageModel(weights, "lstm", 2, 16)
    states = [tf.random.stateless_normal([3, 16], seed=[i, 1]) for i in range(4)]
    tokens = tf.constant([1, 5, 9])
    exact, exact_states = lean.step(tokens, states)
    rounded, rounded_states = lean.step(tokens, states, "bfloat16", lean.matmul_weights("bfloat16"))
    assert lean.matmul_weights("bfloat16")["output_kernel"].dtype == tf.bfloat16
    for a, b in zip([exact, *exact_states], [rounded, *rounded_states]):
        assert b.dtype == tf.float32
        scale = float(tf.reduce_max(tf.abs(a)))
        assert float(tf.reduce_max(tf.abs(a - b))) <= 0.03 * scale
    assert float(tf.reduce_max(tf.abs(exact - rounded))) > 0


def _generate(loaded):
    text = loaded.signatures["generate"](
        prompt=tf.constant(["abc"] * 8),
        length=tf.constant(120),
        temperature=tf.constant(1.0),
        top_k=tf.constant(0),
        seed=tf.constant(4),
    )["text"]
    return [t.decode() for t in text.numpy()]


def test_a_bfloat16_saved_model_runs_float32_on_a_cpu_without_bfloat16(tmp_path):
    """The export records its precision; its graph loop reads the CPU's flags where it runs and
    computes in float32 where they lack bfloat16 (or cannot be read), so its text is then the
    float32 graph loop's, seed for seed."""
    import json

    from textgen.generation.saved_model import export_saved_model

    model = _random_model()
    model.generation_precision = "bfloat16"
    loaded = tf.saved_model.load(export_saved_model(model, str(tmp_path / "saved_model")))
    assert json.loads(loaded.config_json.numpy())["precision"] == "bfloat16"
    loaded.xla_max_streams.assign(0)  # every batch size on the graph loop, where bf16 acts
    # The float32 graph loop in Python, the same seed: what a float32 export generates.
    model.generation_precision = "float32"
    model._xla_max_streams = {"float32": 0}
    reference = model.sample("abc", 120, 1.0, 0, 8, 4)

    without = tmp_path / "cpuinfo-without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    loaded.cpuinfo.assign(str(without))
    assert _generate(loaded) == reference
    loaded.cpuinfo.assign(str(tmp_path / "no-such-file"))
    assert _generate(loaded) == reference

    with_bf16 = tmp_path / "cpuinfo-with"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    loaded.cpuinfo.assign(str(with_bf16))
    texts = _generate(loaded)
    # The same model and seed, the logits rounded: sampled text drifts apart somewhere.
    assert texts != reference and all(t.startswith("abc") and len(t) == 120 for t in texts)
