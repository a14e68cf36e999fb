"""Self-critical sequence training (--scst-after): the reward and its baselines, the logs, the
bad input, and a resume that continues bit for bit across the cross-entropy -> SCST switch and
inside the SCST phase. Tiny models on a dozen shapes images."""

import json
import os
import types

import numpy as np
import pytest

from captioning.coco_data import read_captions
from captioning.datasets.batches import CaptionSet
from captioning.datasets.tokens import build_vocabulary, tokenize
from captioning.train import main
from captioning.training.caption_trainer import CaptionTrainer
from captioning.training.self_critical import SelfCritical, reference_ids, step_seed
from helpers import Log, assert_same_arrays, checkpoint_arrays, tiny_caption_config

SCST = dict(epochs=3, scst_after=1, scst_samples=3, eval_images=0, lr_schedule="constant")


def metrics_rows(run):
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_scst_phase_logs_rewards_and_uses_its_learning_rate(shapes_data, tmp_path):
    log = Log()
    result = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "run", **{**SCST, "eval_images": 4}),
        log=log,
        progress_bar=False,
    )
    assert result.global_step == 9 and np.isfinite(result.step_losses).all()
    steps = [r for r in metrics_rows(tmp_path / "run") if r["kind"] == "step"]
    assert [("scst_sample_reward" in r) for r in steps] == [False] * 3 + [True] * 6
    for row in steps[3:]:
        assert row["learning_rate"] == pytest.approx(2e-4)
        assert 0 <= row["scst_beat_baseline"] <= 1 and row["scst_reward_ms"] > 0
        assert row["scst_sample_reward"] >= 0 and row["scst_greedy_reward"] >= 0
    epochs = [r for r in metrics_rows(tmp_path / "run") if r.get("reason") == "epoch"]
    assert "scst_sample_reward" not in epochs[0] and "scst_step_ms" in epochs[2]
    assert "epoch 2: self-critical training on CIDEr-D from now on" in log.text
    assert log.text.count("self-critical: samples' CIDEr-D") == 2
    # The SCST epochs' training column is the surrogate loss, not a likelihood in nats.
    epoch_lines = [line for line in log if line.startswith("epoch ") and "/3 " in line]
    assert len(epoch_lines) == 3 and "train" in epoch_lines[0], epoch_lines
    assert "nats/token" in epoch_lines[0].split("|")[0]
    for line in epoch_lines[1:]:
        train_part = line.split("|")[0]
        assert "self-critical surrogate loss" in train_part and "perplexity" not in train_part
    assert result.scores is not None  # greedy captions scored after training


def test_resume_is_exact_across_the_switch_and_inside_scst(shapes_data, tmp_path):
    # 3 steps per epoch: steps 1-3 cross-entropy, 4-8 self-critical. Straight to step 8, or
    # stopped at 2 (cross-entropy), resumed to 5 (across the switch, inside SCST), then to 8.
    # The encoder learns from the reward too: its batch-normalisation statistics move as well.
    SCST = dict(globals()["SCST"], scst_encoder="train")
    straight = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "straight", max_steps=8, **SCST),
        log=Log(),
        progress_bar=False,
    )
    for stop, resume in ((2, False), (5, True), (8, True)):
        part = CaptionTrainer.train_run(
            tiny_caption_config(
                shapes_data, tmp_path / "split", max_steps=stop, resume=resume, **SCST
            ),
            explicit=["max_steps", "resume"] if resume else (),
            log=Log(),
            progress_bar=False,
        )
        assert part.global_step == stop
    np.testing.assert_allclose(part.step_losses, straight.step_losses, rtol=1e-5, atol=1e-7)
    assert_same_arrays(tmp_path / "straight", tmp_path / "split", rtol=1e-5, atol=1e-6)
    rows = [
        [r for r in metrics_rows(tmp_path / run) if r["kind"] == "step"]
        for run in ("straight", "split")
    ]
    fields = ("scst_sample_reward", "scst_greedy_reward", "scst_beat_baseline")
    for one, two in zip(*(r for r in rows), strict=True):
        for field in fields:
            assert (field in one) == (field in two) == (one["step"] > 3)
            if field in one:
                assert one[field] == pytest.approx(two[field], rel=1e-5), (one, two)


def test_scst_encoder_freeze_trains_the_decoder_only(shapes_data, tmp_path):
    common = dict(SCST, epochs=2)  # --scst-encoder freeze is the default
    for stop, resume in ((3, False), (6, True)):  # epoch 1 cross-entropy, epoch 2 SCST
        CaptionTrainer.train_run(
            tiny_caption_config(
                shapes_data, tmp_path / "run", max_steps=stop, resume=resume, **common
            ),
            explicit=["max_steps", "resume"] if resume else (),
            log=Log(),
            progress_bar=False,
        )
        arrays = checkpoint_arrays(tmp_path / "run")
        if stop == 3:
            before = arrays
    encoder = [k for k in arrays if k.startswith("model/small_cnn/")]
    decoder = [k for k in arrays if k.startswith("model/") and "recurrent" in k]
    assert encoder and decoder
    for key in encoder:  # weights and batch-normalisation statistics alike
        np.testing.assert_array_equal(arrays[key], before[key], err_msg=key)
    assert any(not np.array_equal(arrays[k], before[k]) for k in decoder)


@pytest.fixture(scope="module")
def caption_set(shapes_data):
    records = read_captions(
        str(shapes_data / "annotations" / "captions_train.json"), str(shapes_data / "images")
    )
    vocabulary = build_vocabulary(tokenize(c) for r in records for c in r.captions)
    return CaptionSet(records, vocabulary, 24)


class FakeModel:
    def __init__(self, end_id):
        self.end_id = end_id


def scst_config(samples, end_token=False):
    """The config fields SelfCritical reads."""
    return types.SimpleNamespace(
        scst_samples=samples,
        scst_baseline="greedy",
        max_length=24,
        scst_encoder="freeze",
        scst_end_token=end_token,
    )


def test_rewards_score_each_sample_against_its_own_image(caption_set):
    config = scst_config(samples=2)
    end = caption_set.vocabulary.id("<end>")
    scst = SelfCritical(FakeModel(end), caption_set, config, log=lambda message: None)
    references = reference_ids(caption_set, end)
    assert [len(r) for r in references] == [5] * len(caption_set)
    # Sample 1 of each image is one of its references, sample 2 another image's; greedy = its own.
    own = [refs[1] for refs in references]
    other = [references[(i + 1) % len(references)][0] for i in range(len(references))]
    width = max(map(len, own + other)) + 1
    samples = np.full((2 * len(own), width), end)
    lengths = np.zeros(2 * len(own), np.int32)
    for i, (a, b) in enumerate(zip(own, other)):
        samples[2 * i, : len(a)], lengths[2 * i] = a, len(a)
        samples[2 * i + 1, : len(b)], lengths[2 * i + 1] = b, len(b)
    greedy, greedy_lengths = samples[0::2], lengths[0::2]
    images = np.arange(len(own))
    sample_reward, greedy_reward, seconds = scst.rewards(
        samples, lengths, greedy, greedy_lengths, images
    )
    assert (sample_reward[0::2] > sample_reward[1::2]).all()
    np.testing.assert_allclose(greedy_reward, sample_reward[0::2])
    assert seconds > 0 and sample_reward.dtype == np.float32


def test_the_end_token_in_the_reward_costs_a_cut_off_caption_more(caption_set):
    """A reference without its last word ("... above a") against the whole reference: with
    <end> among the reward's n-grams, "a <end>" matches no reference, so the cut-off caption
    loses more of its reward than on the words alone."""
    end = caption_set.vocabulary.id("<end>")
    own = [refs[1] for refs in reference_ids(caption_set, end)]
    width = max(map(len, own)) + 1
    whole = np.full((len(own), width), end)
    for i, words in enumerate(own):
        whole[i, : len(words)] = words
    cut = whole.copy()
    cut[np.arange(len(own)), [len(words) - 1 for words in own]] = end
    lengths = np.array([len(words) for words in own])
    images = np.arange(len(own))
    losses = {}
    for end_token in (False, True):
        config = scst_config(samples=1, end_token=end_token)
        scst = SelfCritical(FakeModel(end), caption_set, config, log=lambda message: None)
        reward_whole, reward_cut, _ = scst.rewards(whole, lengths, cut, lengths - 1, images)
        losses[end_token] = reward_whole - reward_cut
    # On the words alone a cut-off caption can even out-score the whole one (consensus).
    assert np.mean(losses[True]) > np.mean(losses[False])
    assert np.mean(losses[True] > losses[False]) > 0.9, losses


def test_a_run_saved_before_the_end_token_reward_resumes_without_it():
    from captioning.config import from_dict

    assert from_dict({}).scst_end_token is False
    assert from_dict({"scst_end_token": True}).scst_end_token is True


def test_step_seeds_depend_on_the_step_only():
    assert step_seed(0, 5) == step_seed(0, 5) != step_seed(0, 6)
    assert step_seed(1, 5) != step_seed(0, 5)


def test_bad_scst_flags_are_one_line(shapes_data, tmp_path, capsys):
    base = [
        "--annotations",
        str(shapes_data / "annotations" / "captions_train.json"),
        "--images",
        str(shapes_data / "images"),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "3",
    ]
    for argv, message in (
        (["--scst-after", "3"], "--scst-after 3 is not below --epochs 3"),
        (["--scst-after", "-2"], "--scst-after must be -1 (never)"),
        (["--scst-after", "1", "--scst-samples", "0"], "--scst-samples must be >= 1"),
        (["--scst-baseline", "mean", "--scst-samples", "1"], "pass --scst-samples 2 or more"),
        (["--scst-baseline", "best"], "--scst-baseline must be greedy or mean"),
        (["--scst-learning-rate", "0"], "--scst-learning-rate must be positive"),
        (["--scst-encoder", "both"], "--scst-encoder must be train or freeze"),
    ):
        assert main(base + argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "run")
