"""Captioning training: run directory, exact resume, feature cache, fine-tuning, the CLI and its
bad-input handling. Tiny models on a dozen 64x64 shapes images: seconds per run."""

import functools
import json
import os

import numpy as np
import pytest
from PIL import Image

from captioning.config import CaptionTrainConfig
from captioning.datasets import images as image_files
from captioning.datasets.batches import CaptionSet, inference_encoder
from captioning.datasets.tokens import build_vocabulary, tokenize
from captioning.inference.decoding import caption_features
from captioning.metrics.coco_metrics import score_captions
from captioning.models.captioner import Captioner
from captioning.train import build_parser, main
from captioning.training.caption_trainer import CaptionTrainer
from helpers import (
    ROOT,
    TRAIN_IMAGES,
    VAL_IMAGES,
    Log,
    assert_same_arrays,
    checkpoint_arrays,
    run_main,
    run_python_module,
    tiny_caption_config,
    tiny_caption_flags,
)
from textgen.corpus.vocabulary import Vocabulary
from textgen.training.run_directory import RunDirectory


def test_training_writes_a_run_directory_and_scores(shapes_data, tmp_path):
    log = Log()
    result = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "run"), log=log, progress_bar=False
    )
    run = RunDirectory(tmp_path / "run")
    assert result.epoch == 2 and result.global_step == 2 * 3 and result.stopped_by == "epochs"
    assert len(result.history) == 2
    for entry in result.history:
        assert np.isfinite(entry["val"]) and entry["val_perplexity"] == pytest.approx(
            np.exp(entry["val"])
        )
    assert "nats/token" in log.text and "perplexity" in log.text

    # vocab.json is textgen's Vocabulary of the training captions.
    records = json.loads((shapes_data / "annotations" / "captions_train.json").read_text())
    expected = build_vocabulary([tokenize(a["caption"]) for a in records["annotations"]])
    assert Vocabulary.load(run.vocabulary_path) == expected
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["hidden_size"] == 16 and config["encoder"] == "small"
    with np.load(run.checkpoint_path, allow_pickle=False) as checkpoint:
        assert any(k.startswith("model/") for k in checkpoint.files)
        assert any(k.startswith("optimizer/") for k in checkpoint.files)

    scores = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(scores["scores"]) == {"images", "correct", "bleu4", "cider"}
    assert scores["scores"]["images"] == VAL_IMAGES == len(scores["captions"])
    assert result.scores == scores["scores"]

    # The run directory alone gives the model back: the same greedy captions.
    model = Captioner.from_run_directory(tmp_path / "run")
    loaded_config = model.train_config
    assert loaded_config.hidden_size == 16
    trainer = CaptionTrainer(
        tiny_caption_config(shapes_data, tmp_path / "run", resume=True),
        explicit=["resume"],
        log=Log(),
        progress_bar=False,
    )
    trainer.prepare()
    captions = caption_features(
        model, trainer.validation_features(VAL_IMAGES), model.vocabulary, 24
    )
    assert captions == [c["caption"] for c in scores["captions"]]
    # Every evaluation reuses one traced encoder (a new tf.function each time traced again, and
    # TensorFlow warned about the retracing from the fifth evaluation on).
    for _ in range(6):
        trainer.validation_features(VAL_IMAGES)
    assert inference_encoder(trainer.model).experimental_get_tracing_count() == 1


def test_first_captions_trains_and_validates_on_each_images_first_captions(shapes_data, tmp_path):
    """--first-captions 1: the vocabulary, every training batch and the validation loss use each
    image's first caption (the shapes data's canonical wording) and nothing else, while the
    scores still count every reference. With 2, batches draw from the first two, both of them."""
    config = tiny_caption_config(
        shapes_data, tmp_path / "run", first_captions=1, captions_per_image=1, epochs=1
    )
    trainer = CaptionTrainer(config, log=Log(), progress_bar=False)
    trainer.prepare()
    annotations = json.loads((shapes_data / "annotations" / "captions_train.json").read_text())
    first = {}
    for annotation in annotations["annotations"]:
        first.setdefault(annotation["image_id"], annotation["caption"])
    assert trainer.vocabulary == build_vocabulary([tokenize(c) for c in first.values()])
    assert len(trainer.vocabulary) < len(
        build_vocabulary([tokenize(a["caption"]) for a in annotations["annotations"]])
    )
    for caption_set in (trainer.train_set, trainer.val_set):
        firsts = caption_set.offsets[:-1]
        for epoch in range(3):
            order, rows = caption_set.epoch_plan(0, epoch, 1)
            assert np.array_equal(rows[:, 0], firsts[order])
        assert np.array_equal(caption_set.fixed_plan(0, 1)[1][:, 0], firsts)
    result = trainer.train()
    assert np.isfinite(result.history[-1]["val"])
    scores = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert all(len(c["references"]) == 5 for c in scores["captions"])

    two = CaptionSet(trainer.train_set.records, trainer.vocabulary, 24, first_captions=2)
    positions = []
    for epoch in range(4):
        order, rows = two.epoch_plan(0, epoch, 2)
        positions.append(rows - two.offsets[order][:, None])  # which of its captions each row is
    positions = np.concatenate(positions)
    assert set(np.unique(positions)) == {0, 1}
    assert np.all(positions[:, 0] != positions[:, 1])


def test_score_captions_on_scenes(shapes_data):
    from captioning.coco_data import read_coco_captions

    records = read_coco_captions(
        shapes_data / "annotations" / "captions_val.json", shapes_data / "images"
    )
    perfect = score_captions([r.captions[0] for r in records], records)
    assert perfect["correct"] == 1.0 and perfect["bleu4"] > 0.5 and perfect["cider"] > 1.0
    wrong = score_captions(["a small red circle above a large blue square"] * len(records), records)
    assert wrong["correct"] < 1.0 and wrong["cider"] < perfect["cider"]


def test_resume_mid_epoch_continues_bit_exactly(shapes_data, tmp_path):
    # 3 steps per epoch; 7 steps straight == 4 steps (stopping inside epoch 2) + 3 resumed.
    # A constant rate: the cosine schedule spans --max-steps, and the first part here has fewer.
    common = dict(dropout=0.25, epochs=3, eval_images=0, lr_schedule="constant")
    straight = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "straight", max_steps=7, **common),
        log=Log(),
        progress_bar=False,
    )
    first = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "split", max_steps=4, **common),
        log=Log(),
        progress_bar=False,
    )
    assert first.stopped_by == "max_steps" and first.epoch == 1
    resumed = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "split", max_steps=7, resume=True, **common),
        explicit=["max_steps", "resume"],
        log=Log(),
        progress_bar=False,
    )
    assert straight.global_step == resumed.global_step == 7
    np.testing.assert_allclose(resumed.step_losses, straight.step_losses, rtol=1e-5)
    assert_same_arrays(tmp_path / "straight", tmp_path / "split", rtol=1e-5, atol=1e-6)


def test_an_interrupted_cosine_run_resumes_on_the_same_schedule(shapes_data, tmp_path):
    # The schedule spans 3 epochs (9 steps); the first attempt dies after 5 steps, its last
    # checkpoint at step 4; the resumed run redoes step 5 with the rate step 5 had.
    common = dict(
        epochs=3, eval_images=0, lr_schedule="cosine", learning_rate=1e-2, min_learning_rate=1e-3
    )
    straight = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "straight", **common),
        log=Log(),
        progress_bar=False,
    )
    trainer = CaptionTrainer(
        tiny_caption_config(shapes_data, tmp_path / "split", **common),
        log=Log(),
        progress_bar=False,
    )
    trainer.prepare()
    step, calls = trainer.train_step, []

    def dies_after_five_steps(*args):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return step(*args)

    trainer.train_step = dies_after_five_steps
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "split", resume=True, **common),
        explicit=["resume"],
        log=Log(),
        progress_bar=False,
    )
    assert straight.global_step == resumed.global_step == 9
    np.testing.assert_allclose(resumed.step_losses, straight.step_losses, rtol=1e-5)
    assert straight.history[-1]["learning_rate"] < 2e-3  # it did fall
    assert_same_arrays(tmp_path / "straight", tmp_path / "split", rtol=1e-5, atol=1e-6)


def test_max_minutes_stops_with_a_checkpoint(shapes_data, tmp_path):
    result = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "run", max_minutes=1e-6, eval_images=0),
        log=Log(),
        progress_bar=False,
    )
    assert result.stopped_by == "max_minutes" and result.global_step == 1
    assert RunDirectory(tmp_path / "run").has_checkpoint()


def test_runs_saved_before_encoder_spatial_load_as_flatten(shapes_data, tmp_path):
    CaptionTrainer.train_run(
        tiny_caption_config(
            shapes_data, tmp_path / "run", epochs=1, eval_images=0, encoder_spatial="flatten"
        ),
        log=Log(),
        progress_bar=False,
    )
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    del saved["encoder_spatial"]
    path.write_text(json.dumps(saved))
    model = Captioner.from_run_directory(tmp_path / "run")
    config = model.train_config
    assert config.encoder_spatial == "flatten" and model.encoder.backbone.spatial == "flatten"
    assert CaptionTrainConfig().encoder_spatial == "lines"


def learning_rates_used(trainer):
    """Wraps the trainer's step so that it records the learning rate each step trains with."""
    rates, step = [], trainer.train_step

    def recording_step(*args):
        rates.append(float(trainer.optimizer.learning_rate.numpy()))
        return step(*args)

    trainer.train_step = recording_step
    return rates


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rate_schedule_over_max_steps(shapes_data, tmp_path, schedule):
    config = tiny_caption_config(
        shapes_data,
        tmp_path / "run",
        epochs=100,
        max_steps=6,
        eval_images=0,
        learning_rate=1e-2,
        min_learning_rate=1e-3,
        lr_schedule=schedule,
    )
    trainer = CaptionTrainer(config, log=Log(), progress_bar=False)
    trainer.prepare()
    rates = learning_rates_used(trainer)
    trainer.train()
    if schedule == "constant":
        expected = [1e-2] * 6
    else:  # a half cosine from 1e-2 at step 0 towards 1e-3 at step 6 (max_steps, before 100 epochs)
        expected = [1e-3 + 9e-3 * 0.5 * (1 + np.cos(np.pi * k / 6)) for k in range(6)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_cosine_schedule_follows_the_clock_under_max_minutes(shapes_data, tmp_path, monkeypatch):
    config = tiny_caption_config(
        shapes_data,
        tmp_path / "run",
        epochs=100,
        max_minutes=10,
        eval_images=0,
        learning_rate=1e-2,
        min_learning_rate=0.0,
    )
    trainer = CaptionTrainer(config, log=Log(), progress_bar=False)
    trainer.prepare()
    clock = [trainer.started]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    assert trainer.learning_rate(0, trainer.run_fraction()) == pytest.approx(1e-2)
    clock[0] += 300  # half of the 10 minutes: half way down the cosine
    assert trainer.run_fraction() == pytest.approx(0.5)
    assert trainer.learning_rate(0, trainer.run_fraction()) == pytest.approx(5e-3)
    clock[0] += 600  # past the budget: the minimum, not an upturn
    assert trainer.learning_rate(0, trainer.run_fraction()) == pytest.approx(0.0, abs=1e-12)


def pretrained_config(data, out, **overrides):
    return tiny_caption_config(
        data, out, encoder="mobilenet_v3_small", encoder_weights="none", image_size=32, **overrides
    )


def test_frozen_backbone_features_are_cached_and_no_epoch_reads_an_image(
    shapes_data, tmp_path, monkeypatch
):
    loads, epochs_done = [], []
    real_load = image_files.load_image

    def counting_load(path, size):
        if epochs_done:
            raise AssertionError(f"an image was read after epoch 1: {path}")
        loads.append(os.path.basename(path))
        return real_load(path, size)

    def log(message):
        if message.startswith("epoch 1/"):
            epochs_done.append(message)

    monkeypatch.setattr(image_files, "load_image", counting_load)
    cache = tmp_path / "cache"
    config = pretrained_config(
        shapes_data, tmp_path / "run", feature_cache=str(cache), eval_images=4
    )
    result = CaptionTrainer.train_run(config, log=log, progress_bar=False)
    assert result.epoch == 2 and epochs_done
    assert len(loads) == len(set(loads)) == TRAIN_IMAGES + VAL_IMAGES  # each image decoded once
    (directory,) = cache.iterdir()
    assert directory.name.startswith("mobilenet_v3_small-none-") and directory.name.endswith(
        "-32px"
    )
    files = sorted(directory.iterdir())
    assert len(files) == TRAIN_IMAGES + VAL_IMAGES and all(f.suffix == ".npy" for f in files)
    assert np.load(files[0], allow_pickle=False).shape == (576,)

    # Another run with the same backbone, weights and cache decodes no image at all.
    loads.clear()
    epochs_done.clear()
    again = CaptionTrainer.train_run(
        pretrained_config(shapes_data, tmp_path / "again", feature_cache=str(cache), eval_images=4),
        log=Log(),
        progress_bar=False,
    )
    assert loads == []
    np.testing.assert_allclose(again.step_losses, result.step_losses, rtol=1e-5)


def test_fine_tune_after_unfreezes_the_backbone_with_its_own_optimizer(shapes_data, tmp_path):
    log = Log()
    config = pretrained_config(
        shapes_data, tmp_path / "run", fine_tune_after=1, encoder_learning_rate=1e-3, eval_images=0
    )
    trainer = CaptionTrainer(config, log=log, progress_bar=False)
    trainer.prepare()
    backbone = [np.array(v) for v in trainer.model.encoder.backbone.trainable_weights]
    assert backbone == [] and trainer.train_source.kind == "features"
    initial = [np.array(v) for v in trainer.model.encoder.backbone.weights]
    trainer.train()
    assert "fine-tuning the mobilenet_v3_small backbone" in log.text
    assert trainer.fine_tuning and trainer.train_source.kind == "pixels"
    after = [np.array(v) for v in trainer.model.encoder.backbone.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(initial, after))
    arrays = checkpoint_arrays(tmp_path / "run")
    assert any(k.startswith("encoder_optimizer/") for k in arrays)
    # Resuming a fine-tuning run restores the encoder optimizer too.
    resumed = CaptionTrainer.train_run(
        pretrained_config(
            shapes_data, tmp_path / "run", fine_tune_after=1, epochs=3, eval_images=0, resume=True
        ),
        explicit=["epochs", "resume"],
        log=Log(),
        progress_bar=False,
    )
    assert resumed.epoch == 3


# ---------------------------------------------------------------------------------------------
# The CLI


cli = functools.partial(run_main, main)  # cli(capsys, *argv) -> (status, out, err)


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
    for name, field in CaptionTrainConfig.__dataclass_fields__.items():
        switched_off = field.default is True  # on by default: the flag is --no-NAME
        assert ("--no-" if switched_off else "--") + name.replace("_", "-") in text


def test_cli_trains(shapes_data, tmp_path, capsys):
    status, out, err = cli(capsys, *tiny_caption_flags(shapes_data, tmp_path / "run"))
    assert status == 0, err
    assert "epoch 1/1" in out and "nats/token" in out
    assert RunDirectory(tmp_path / "run").has_checkpoint()
    status, out, err = cli(capsys, *tiny_caption_flags(shapes_data, tmp_path / "run"))
    assert status == 2 and "already holds a run" in err
    status, out, err = cli(
        capsys,
        *tiny_caption_flags(shapes_data, tmp_path / "run"),
        "--resume",
        "--hidden-size",
        "32",
    )
    assert status == 2 and "--hidden-size 32" in err and "\n" not in err.strip()
    status, out, err = cli(capsys, *tiny_caption_flags(shapes_data, tmp_path / "fresh"), "--resume")
    assert status == 2 and "no checkpoint" in err


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "content, words",
    [
        ("{ not json", "not valid JSON"),
        ('{"images": []}', "missing top-level key 'annotations'"),
        ("[1, 2, 3]", "not COCO caption format"),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], '
            '"annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]}',
            "not captions",
        ),
    ],
)
def test_bad_annotation_files_are_one_line_errors(tmp_path, capsys, content, words):
    annotations = write(tmp_path / "captions.json", content)
    status, out, err = cli(
        capsys, "--annotations", annotations, "--images", tmp_path, "--out", tmp_path / "run"
    )
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "run").exists()  # nothing written before the input is checked


@pytest.mark.integration
def test_cli_errors_have_no_traceback(tmp_path):
    """The real command line: exit status 2, one line on stderr."""
    annotations = write(tmp_path / "captions.json", "this is not JSON")
    process = run_python_module(
        "captioning.train",
        "--annotations",
        annotations,
        "--images",
        tmp_path,
        "--out",
        tmp_path / "run",
        cwd=ROOT,
        timeout=120,
    )
    assert process.returncode == 2
    assert process.stderr.count("\n") == 1 and process.stderr.startswith("error: "), process.stderr
    assert "Traceback" not in process.stderr and "not valid JSON" in process.stderr


def test_bad_flag_values(shapes_data, tmp_path, capsys):
    flags = tiny_caption_flags(shapes_data, tmp_path / "run")
    for extra, words in [
        (["--encoder", "vgg16"], "--encoder must be one of"),
        (["--encoder-weights", "imagenet"], "no ImageNet weights"),
        (["--encoder-filters", "4,x"], "--encoder-filters"),
        (["--image-size", "30"], "divisible"),
        (["--fine-tune-after", "1"], "pretrained encoders"),
        (["--cell", "transformer"], "--cell"),
        (["--lr-schedule", "step"], "--lr-schedule"),
        (["--encoder-spatial", "grid"], "--encoder-spatial"),
        (["--min-learning-rate", "0.5"], "--min-learning-rate"),
        (["--first-captions", "-1"], "--first-captions must be >= 0"),
        (
            ["--first-captions", "1", "--captions-per-image", "2"],
            "--captions-per-image 2 is more than --first-captions 1",
        ),
    ]:
        status, out, err = cli(capsys, *flags, *extra)
        assert status == 2 and words in err and err.count("\n") == 1, (extra, err)
    status, out, err = cli(
        capsys,
        *flags,
        "--encoder",
        "mobilenet_v3_small",
        "--encoder-weights",
        tmp_path / "missing.weights.h5",
        "--image-size",
        "32",
    )
    assert status == 2 and "no such file" in err


def test_imagenet_download_failure_through_the_cli(shapes_data, tmp_path, capsys, monkeypatch):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] "
            "Temporary failure in name resolution"
        )

    monkeypatch.setattr(file_utils, "get_file", no_network)
    status, out, err = cli(
        capsys,
        *tiny_caption_flags(shapes_data, tmp_path / "run"),
        "--encoder",
        "mobilenet_v3_small",
        "--image-size",
        "32",
    )
    assert status == 2 and err.count("\n") == 1
    assert "could not download the ImageNet weights" in err and "--encoder-weights PATH" in err


def test_all_images_missing_is_an_error(shapes_data, tmp_path, capsys):
    status, out, err = cli(
        capsys,
        *tiny_caption_flags(shapes_data, tmp_path / "run"),
        "--images",
        tmp_path / "nowhere",
        "--val-images",
        shapes_data / "images",
    )
    assert status == 2 and "none of the 12 images" in err and err.count("\n") == 1


def broken_dataset(source, target):
    """A copy of the shapes data with every kind of bad input, one each."""
    images = target / "images"
    images.mkdir(parents=True)
    document = json.loads((source / "annotations" / "captions_train.json").read_text())
    entries = document["images"]
    for entry in entries:
        (images / entry["file_name"]).write_bytes(
            (source / "images" / entry["file_name"]).read_bytes()
        )
    names = [e["file_name"] for e in entries]
    os.remove(images / names[0])  # missing
    data = (images / names[1]).read_bytes()
    (images / names[1]).write_bytes(data[: len(data) // 2])  # truncated PNG
    (images / names[2]).write_text("not an image, just some text\n")  # a text file
    Image.new("RGB", (200, 200), (90, 90, 90)).save(
        images / names[3]
    )  # above the bomb limit (patched)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "cut.jpg", quality=95)
    jpeg = (images / "cut.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])  # truncated JPEG: passes verify()
    entries[4]["file_name"] = "cut.jpg"
    first = next(a for a in document["annotations"] if a["image_id"] == entries[5]["id"])
    first["caption"] = "   "  # an empty caption
    write(target / "captions.json", json.dumps(document))
    return names


def test_bad_images_and_captions_are_skipped_and_named(shapes_data, tmp_path, capsys, monkeypatch):
    names = broken_dataset(shapes_data, tmp_path / "broken")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)  # 200x200 is a "bomb", 64x64 is not
    flags = tiny_caption_flags(shapes_data, tmp_path / "run")
    flags[flags.index("--annotations") + 1] = str(tmp_path / "broken" / "captions.json")
    flags[flags.index("--images") + 1] = str(tmp_path / "broken" / "images")
    status, out, err = cli(capsys, *flags, "--val-images", shapes_data / "images")
    text = out + err
    assert status == 0, text
    assert "skipped 1 of 12 images whose file is missing" in text and names[0] in text
    assert names[1] in text and "truncated" in text
    assert names[2] in text and "text file" in text
    assert names[3] in text and "decompression-bomb" in text
    assert "cut.jpg" in text and "failed to decode" in text
    assert "skipped 1 empty caption" in text
    assert "7 training images" in text  # 12 - missing - truncated - text - bomb - cut.jpg
    assert "Traceback" not in text


def test_divergence_aborts_and_keeps_the_last_checkpoint(
    shapes_data, tmp_path, capsys, monkeypatch
):
    from captioning.training import caption_trainer as trainer_module

    real = trainer_module.CaptionTrainer.compile_steps

    def poisoned(self):
        real(self)
        step = self.train_step

        def train_step(inputs, captions):
            total, count = step(inputs, captions)
            if self.progress.global_step >= 2:
                return total * float("nan"), count
            return total, count

        self.train_step = train_step

    monkeypatch.setattr(trainer_module.CaptionTrainer, "compile_steps", poisoned)
    status, out, err = cli(
        capsys, *tiny_caption_flags(shapes_data, tmp_path / "run"), "--checkpoint-every", "1"
    )
    assert status == 3 and "loss became nan at step 3" in err and err.count("\n") == 1
    with np.load(tmp_path / "run" / "checkpoint.npz", allow_pickle=False) as data:
        progress = json.loads(data["progress"].tobytes().decode())
    assert progress["global_step"] == 2


def test_images_decoded_every_epoch_give_the_same_run_as_images_in_memory(shapes_data, tmp_path):
    log = Log()
    memory = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "memory", eval_images=0),
        log=Log(),
        progress_bar=False,
    )
    files = CaptionTrainer.train_run(
        tiny_caption_config(shapes_data, tmp_path / "files", eval_images=0, image_memory_mb=0),
        log=log,
        progress_bar=False,
    )
    assert "decoded again every epoch" in log.text
    np.testing.assert_allclose(files.step_losses, memory.step_losses, rtol=1e-6)


def test_without_validation_captions_a_share_of_the_images_is_held_out(
    shapes_data, tmp_path, capsys
):
    flags = tiny_caption_flags(shapes_data, tmp_path / "run")
    at = flags.index("--val-annotations")
    del flags[at : at + 2]
    status, out, err = cli(capsys, *flags, "--val-fraction", "0.25")
    assert status == 0, err
    assert "9 training images" in out and "3 validation images" in out


def test_a_karpathy_split_file_trains_on_train_and_restval_and_validates_on_val(
    shapes_data, tmp_path
):
    entries = []
    for split, karpathy_split in (("train", "train"), ("val", "val")):
        document = json.loads((shapes_data / "annotations" / f"captions_{split}.json").read_text())
        captions = {}
        for annotation in document["annotations"]:
            captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
        for i, image in enumerate(document["images"]):
            entries.append(
                {
                    "filepath": "images",
                    "filename": image["file_name"],
                    "cocoid": image["id"],
                    "split": "restval" if split == "train" and i % 3 == 0 else karpathy_split,
                    "sentences": [{"raw": c} for c in captions[image["id"]]],
                }
            )
    entries.append(dict(entries[0], split="test", cocoid=99999))  # never read for training
    path = tmp_path / "dataset_shapes.json"
    write(path, json.dumps({"dataset": "shapes", "images": entries}))
    log = Log()
    config = tiny_caption_config(
        shapes_data,
        tmp_path / "run",
        annotations=str(path),
        images=str(shapes_data),
        val_annotations="",
        epochs=1,
        eval_images=0,
    )
    CaptionTrainer.train_run(config, log=log, progress_bar=False)
    assert (
        f"{TRAIN_IMAGES} training images" in log.text
        and f"{VAL_IMAGES} validation images" in log.text
    )
