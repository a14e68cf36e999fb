"""The learning-rate schedule: one definition (textgen.training.loop.learning_rate) that both
trainers use, pinned here value by value."""

import math

import pytest

from captioning.config import CaptionTrainConfig
from captioning.training.caption_trainer import CaptionTrainer
from textgen.config import TrainConfig
from textgen.training.loop import TrainingLoop, learning_rate
from textgen.training.text_trainer import TextTrainer

CONFIGS = [TrainConfig, CaptionTrainConfig]


def test_both_trainers_use_the_one_schedule():
    assert TextTrainer.learning_rate is TrainingLoop.learning_rate
    assert TextTrainer.run_fraction is CaptionTrainer.run_fraction is TrainingLoop.run_fraction
    # The captioner departs from it only in self-critical epochs, which run at their own
    # constant --scst-learning-rate; every cross-entropy epoch follows the one schedule.
    config = CaptionTrainConfig(learning_rate=4e-3, lr_decay=0.5, lr_decay_after=1)

    for scst_after in (-1, 0):  # -1: never self-critical; 0: from the first epoch
        config.scst_after = scst_after
        trainer = CaptionTrainer.__new__(CaptionTrainer)  # the schedule needs only the config
        trainer.config = config
        for epoch, fraction in [(0, 0.0), (2, 0.3), (5, 0.9)]:
            expected = config.scst_learning_rate if scst_after == 0 else None
            expected = expected or learning_rate(config, epoch, fraction)
            assert trainer.learning_rate(epoch, fraction) == expected


@pytest.mark.parametrize("config_class", CONFIGS)
def test_per_epoch_decay_after_n_epochs(config_class):
    """char-rnn's schedule: --lr-decay-after epochs at the initial rate, then one more decay per
    epoch (the two trainers disagreed by one epoch before they shared it)."""
    config = config_class(
        learning_rate=4e-3, lr_schedule="constant", lr_decay=0.5, lr_decay_after=1
    )
    assert [learning_rate(config, epoch, 0.0) for epoch in range(3)] == pytest.approx(
        [4e-3, 2e-3, 1e-3]
    )
    config.lr_decay_after = 0
    assert learning_rate(config, 0, 0.0) == pytest.approx(2e-3)


@pytest.mark.parametrize("config_class", CONFIGS)
def test_cosine_is_the_default_and_spans_the_run(config_class):
    config = config_class(learning_rate=4e-3, min_learning_rate=1e-4)
    assert config.lr_schedule == "cosine" and config.lr_decay == 1.0
    rates = [learning_rate(config, 0, fraction) for fraction in (0.0, 0.25, 0.5, 1.0)]
    expected = [1e-4 + 3.9e-3 * 0.5 * (1 + math.cos(math.pi * f)) for f in (0.0, 0.25, 0.5, 1.0)]
    assert rates == pytest.approx(expected)
    assert rates[0] == pytest.approx(4e-3) and rates[-1] == pytest.approx(1e-4)
