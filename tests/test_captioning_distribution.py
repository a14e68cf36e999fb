"""captioning.train under tf.distribute: a MirroredStrategy run over two logical CPU devices
follows the one-device trajectory step by step, and its checkpoints resume onto it.

The training runs are in subprocesses: logical CPU devices must be configured before TensorFlow
starts. 15 training images in batches of 4 make the last batch of every epoch three images, so the
replicas' shares of it are unequal (2 and 1). A last batch smaller than the replica count would
leave a replica empty; such a batch is left out of the epoch under a strategy (tested with 13).
A high learning rate and a small --grad-clip make the steps large and the clipping act, so
per-replica clipping or per-replica batch statistics would show.
"""

import pytest

from captioning.train import main
from helpers import run_python

SETUP = """
import textgen, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import dataclasses, os, tempfile, numpy as np
from captioning import shapes
from captioning.config import CaptionTrainConfig
from captioning.training.caption_trainer import CaptionTrainer
directory = tempfile.mkdtemp()
shapes.generate(shapes.ShapesConfig(out=directory + "/data", train_size=15, val_size=4, seed=5))
annotations = directory + "/data/annotations/"
config = CaptionTrainConfig(
    annotations=annotations + "captions_train.json", images=directory + "/data/images",
    val_annotations=annotations + "captions_val.json", encoder_filters="4,8", feature_size=16,
    hidden_size=16, embedding_size=8, batch_size=4, captions_per_image=2, epochs=2,
    learning_rate=0.02, lr_schedule="constant", grad_clip=0.1, checkpoint_every=2, eval_images=0,
    dropout=0.0,  # dropout masks are drawn per replica, so only exact without
    out=directory + "/one", strategy="none")
quiet = dict(log=lambda message: None, progress_bar=False)

def relative(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b) / np.abs(a)))

one = CaptionTrainer.train_run(config, **quiet)
assert one.global_step == 8, one.global_step  # 2 epochs of 4 batches: 4, 4, 4 and 3 images
assert min(one.step_losses[4:]) < one.step_losses[0] - 0.3, one.step_losses  # it does learn
"""


@pytest.mark.integration
def test_mirrored_captioning_matches_one_device():
    out = run_python(
        SETUP
        + """
mirrored = dataclasses.replace(config, out=directory + "/two", strategy="mirrored")
two = CaptionTrainer.train_run(mirrored, **quiet)
difference = relative(one.step_losses, two.step_losses)
assert difference < 1e-4, (difference, one.step_losses, two.step_losses)
# The validation loss uses batch normalisation's moving averages, which accumulate the float
# difference between the synchronized (one-pass) and the local (two-pass) batch variance.
assert abs(one.final_val_loss - two.final_val_loss) < 1e-3 * one.final_val_loss
print("max relative loss difference", difference)

from textgen.errors import UsageError
try:
    odd = dataclasses.replace(config, out=directory + "/odd", strategy="mirrored", batch_size=3)
    CaptionTrainer.train_run(odd, **quiet)
    raise AssertionError("an odd global batch over two replicas was accepted")
except UsageError as error:
    assert "`batch_size` 3" in str(error) and "2 replicas" in str(error), error
assert not os.path.exists(directory + "/odd")

# 13 images: the last batch (1 image) would leave a replica with nothing, and synchronized batch
# normalisation over an empty share fails under oneDNN; so two replicas leave it out: 3 steps
# an epoch instead of 4.
shapes.generate(shapes.ShapesConfig(out=directory + "/data13", train_size=13, val_size=4, seed=5))
thirteen = directory + "/data13/annotations/"
result = CaptionTrainer.train_run(dataclasses.replace(
    config, annotations=thirteen + "captions_train.json", images=directory + "/data13/images",
    val_annotations=thirteen + "captions_val.json", out=directory + "/thirteen",
    strategy="mirrored"), **quiet)
assert result.global_step == 6 and result.epoch == 2, (result.global_step, result.epoch)
"""
    )
    assert "max relative loss difference" in out


@pytest.mark.integration
@pytest.mark.slow  # test_mirrored_captioning_matches_one_device is its quick form
def test_mirrored_checkpoints_resume_onto_the_one_device_trajectory():
    out = run_python(
        SETUP
        + """
# Mirrored for 3 steps (mid epoch 1), resumed mirrored to step 6 (mid epoch 2), then resumed on
# one device to the end: every step's loss is the straight one-device run's.
split = dataclasses.replace(config, out=directory + "/split", strategy="mirrored", max_steps=3)
first = CaptionTrainer.train_run(split, **quiet)
assert first.global_step == 3 and first.stopped_by == "max_steps"
second = CaptionTrainer.train_run(dataclasses.replace(split, max_steps=6, resume=True),
               explicit=["max_steps", "resume", "strategy"], **quiet)
assert second.global_step == 6
on_one = dataclasses.replace(split, max_steps=0, strategy="none", resume=True)
last = CaptionTrainer.train_run(on_one,
             explicit=["max_steps", "resume", "strategy"], **quiet)
assert last.global_step == 8 and last.epoch == 2
difference = relative(one.step_losses, last.step_losses)
assert difference < 1e-4, (difference, one.step_losses, last.step_losses)
assert abs(one.final_val_loss - last.final_val_loss) < 1e-3 * one.final_val_loss  # as above
print("max relative loss difference", difference)
"""
    )
    assert "max relative loss difference" in out


# About 45 s: self-critical training under MirroredStrategy, and its resume from inside the SCST
# phase (tests/test_captioning_scst.py is their one-device quick form).
@pytest.mark.slow
@pytest.mark.integration
def test_mirrored_self_critical_training_scores_each_replicas_own_images():
    out = run_python(
        SETUP
        + """
from captioning.training.caption_trainer import CaptionTrainer
# Epoch 3 self-critical, 2 samples per image: 15 images in batches of 4 (shares 2+2, ..., 2+1).
scst = dataclasses.replace(config, out=directory + "/scst", strategy="mirrored", epochs=3,
                           scst_after=2, scst_samples=2)
trainer = CaptionTrainer(scst, **quiet)
trainer.prepare()
result = trainer.train()
assert result.global_step == 12 and np.isfinite(result.step_losses).all(), result.step_losses
sample, greedy, beat, samples, images, seconds = trainer.progress.scst_sums
assert (samples, images) == (30, 15), trainer.progress.scst_sums  # every image once, K each
assert 0 <= beat <= 30 and seconds > 0 and sample >= 0 and greedy >= 0
print("self-critical under two replicas", sample / samples, greedy / images)

# Stopped inside the self-critical epoch (step 10 of 12) and resumed under the strategy: the same
# samples are drawn (the seed of a step is (--seed, step, replica)), so every loss and the final
# weights are the straight run's.
split = dataclasses.replace(scst, out=directory + "/scst_split", max_steps=10)
assert CaptionTrainer.train_run(split, **quiet).global_step == 10
resumed = CaptionTrainer.train_run(dataclasses.replace(split, max_steps=0, resume=True),
                explicit=["max_steps", "resume"], **quiet)
assert resumed.global_step == 12
np.testing.assert_allclose(resumed.step_losses, result.step_losses, rtol=1e-5, atol=1e-7)
straight = np.load(directory + "/scst/checkpoint.npz", allow_pickle=False)
again = np.load(directory + "/scst_split/checkpoint.npz", allow_pickle=False)
weights = [k for k in straight.files if "/" in k]  # weights, optimizer slots, statistics
assert weights and set(weights) == {k for k in again.files if "/" in k}
for key in weights:
    np.testing.assert_allclose(again[key], straight[key], rtol=1e-5, atol=1e-6, err_msg=key)
print("mirrored self-critical resume is exact")
"""
    )
    assert "self-critical under two replicas" in out
    assert "mirrored self-critical resume is exact" in out


def test_bad_strategy_flags_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    flags = [
        "--annotations",
        str(tmp_path / "a.json"),
        "--images",
        str(tmp_path),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert main(flags + ["--strategy", "parameter-server"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "--strategy must be auto, none, mirrored or multiworker" in err
    ), err
    assert not (tmp_path / "run").exists()
