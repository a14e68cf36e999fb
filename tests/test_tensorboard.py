"""TensorBoard event files in RUN/logs: what each trainer writes, read back as TensorBoard would,
and a resume that leaves every step once."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import QUIET
from textgen.training.metrics_log import FILE, evaluations, read_rows, step_losses
from textgen.training.tensorboard_log import TensorBoardLog, compact, event_files, read_events
from textgen.training.text_trainer import TextTrainer


def summaries(directory):
    """{tag: [(step, value), ...]} of every event file in `directory`, in file order, with the
    plugin that TensorBoard would show each tag in: {tag: plugin name}."""
    values, plugins = {}, {}
    for path in event_files(directory):
        events, torn = read_events(path)
        assert not torn
        for event in events:
            for value in event.summary.value:
                plugins.setdefault(value.tag, value.metadata.plugin_data.plugin_name)
                array = tf.make_ndarray(value.tensor)
                array = array.item() if array.ndim == 0 else array  # a number or bytes
                values.setdefault(value.tag, []).append((event.step, array))
    return values, plugins


def steps(values, tag):
    return [step for step, _ in values[tag]]


def test_a_textgen_run_writes_losses_rates_throughput_validation_and_samples(tiny_config, tmp_path):
    config = dataclasses.replace(
        tiny_config, max_steps=45, sample_every=20, sample_length=30, out=str(tmp_path / "run")
    )
    result = TextTrainer.train_run(config, **QUIET)
    values, plugins = summaries(os.path.join(config.out, "logs"))
    assert steps(values, "train/loss") == list(range(1, 46))
    np.testing.assert_allclose([v for _, v in values["train/loss"]], result.step_losses, rtol=1e-6)
    np.testing.assert_allclose([v for _, v in values["train/learning_rate"]], 4e-3, rtol=1e-6)
    assert all(v > 0 for _, v in values["train/characters_per_second"])
    evaluated = evaluations(read_rows(os.path.join(config.out, FILE)))
    assert steps(values, "validation/nats_per_token") == [row["step"] for row in evaluated]
    for (_, nats), (_, bits), (_, perplexity), row in zip(
        values["validation/nats_per_token"],
        values["validation/bits_per_char"],
        values["validation/perplexity"],
        evaluated,
    ):
        assert nats == pytest.approx(row["val"])
        assert bits == pytest.approx(row["val_bits_per_char"])
        assert perplexity == pytest.approx(math.exp(row["val"]), rel=1e-5)
    assert steps(values, "samples") == [20, 40]
    assert all(len(text.decode("utf-8")) > 30 for _, text in values["samples"])
    assert plugins["train/loss"] == "scalars" and plugins["samples"] == "text"


def test_a_resume_drops_what_a_killed_run_logged_after_its_checkpoint(tiny_config, tmp_path):
    """Both logs: the metrics log's rows and TensorBoard's events of the steps after the
    checkpoint are dropped and written again, each step once, on the uninterrupted trajectory."""
    config = dataclasses.replace(tiny_config, max_steps=16, out=str(tmp_path / "straight"))
    straight = TextTrainer.train_run(config, **QUIET)
    killed = dataclasses.replace(config, max_steps=12, out=str(tmp_path / "killed"))
    TextTrainer.train_run(killed, **QUIET)
    # What a run killed after step 12's checkpoint leaves: rows and events of steps never
    # saved, a line and a record torn in half.
    with open(os.path.join(killed.out, FILE), "a", encoding="utf-8") as f:
        f.writelines(json.dumps({"kind": "step", "step": s, "loss": 99.0}) + "\n" for s in (13, 14))
        f.write('{"kind": "step", "step": 15, "lo')
    logs = os.path.join(killed.out, "logs")
    writer = TensorBoardLog(killed.out).open()
    for step in range(13, 20):
        writer.scalars(step, {"train/loss": 99.0})
    writer.close()
    last = event_files(logs)[-1]
    with open(last, "ab") as f:
        f.write(open(last, "rb").read()[-30:-7])
    resumed = TextTrainer.train_run(
        dataclasses.replace(killed, max_steps=16, resume=True),
        explicit={"max_steps", "resume"},
        **QUIET,
    )
    rows = read_rows(os.path.join(killed.out, FILE))
    assert [row["step"] for row in rows if row["kind"] == "step"] == list(range(1, 17))
    np.testing.assert_allclose(step_losses(rows), straight.step_losses, rtol=1e-5)
    assert resumed.step_losses == step_losses(rows)
    values, _ = summaries(logs)
    assert steps(values, "train/loss") == list(range(1, 17))  # each step once, in order
    np.testing.assert_allclose([v for _, v in values["train/loss"]], resumed.step_losses)
    assert len(event_files(logs)) == 2  # the compacted file, then the resumed run's
    # Resuming the finished run writes nothing, in either log.
    before = {p: open(p, "rb").read() for p in event_files(logs) + [os.path.join(killed.out, FILE)]}
    done = TextTrainer.train_run(dataclasses.replace(killed, max_steps=16, resume=True), **QUIET)
    assert done.stopped_by == "done" and done.step_losses == resumed.step_losses
    after = {p: open(p, "rb").read() for p in event_files(logs) + [os.path.join(killed.out, FILE)]}
    assert after == before


def test_compact_keeps_wall_times_and_changes_nothing_with_nothing_to_drop(tmp_path):
    log = TensorBoardLog(tmp_path).open()
    for step in range(1, 6):
        log.scalars(step, {"loss": step})
    log.close()
    (path,) = event_files(log.directory)
    before = open(path, "rb").read()
    compact(log.directory, 5)
    assert open(path, "rb").read() == before
    original, _ = read_events(path)
    compact(log.directory, 3)
    kept, torn = read_events(path)
    assert not torn and [e.step for e in kept if e.summary.value] == [1, 2, 3]
    assert [e.wall_time for e in kept] == [e.wall_time for e in original[: len(kept)]]
    # A worker other than the chief writes nothing.
    TensorBoardLog(tmp_path / "other", write=False).open().scalars(1, {"loss": 1.0})
    assert not os.path.exists(tmp_path / "other")


def test_tensorboard_reads_the_events(tiny_config, tmp_path):
    """TensorBoard's own loader (`pip install '.[tensorboard]'`) finds each tag in the
    dashboard it belongs to: scalars, text, images."""
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.plugin_event_accumulator"
    )
    log = TensorBoardLog(tmp_path).open()
    log.scalars(1, {"train/loss": 2.5})
    log.text(1, "samples", "To be,\nor not")
    log.images(1, "validation/captions", np.full((2, 8, 6, 3), 200, np.uint8), ["a", "b"])
    log.close()
    events = accumulator.EventAccumulator(log.directory, size_guidance={"tensors": 0})
    events.Reload()
    data_class = {tag: events.SummaryMetadata(tag).data_class for tag in events.Tags()["tensors"]}
    assert data_class == {
        "train/loss": 1,  # DATA_CLASS_SCALAR
        "samples": 2,  # DATA_CLASS_TENSOR (text)
        "validation/captions": 3,  # DATA_CLASS_BLOB_SEQUENCE (images)
        "validation/captions_captions": 2,
    }
    (image,) = events.Tensors("validation/captions")
    width, height, first, _ = tf.make_ndarray(image.tensor_proto)
    assert (width, height) == (b"6", b"8")
    assert tf.io.decode_png(first).numpy().shape == (8, 6, 3)


def test_a_captioning_run_writes_validation_images_with_their_captions(tmp_path):
    from captioning import shapes
    from captioning.config import CaptionTrainConfig
    from captioning.training.caption_trainer import TENSORBOARD_IMAGES, CaptionTrainer

    data = tmp_path / "shapes"
    shapes.generate(shapes.ShapesConfig(out=str(data), train_size=8, val_size=6, seed=5))
    config = CaptionTrainConfig(
        annotations=str(data / "annotations" / "captions_train.json"),
        val_annotations=str(data / "annotations" / "captions_val.json"),
        images=str(data / "images"),
        out=str(tmp_path / "run"),
        encoder_filters="4,8",
        feature_size=16,
        hidden_size=16,
        embedding_size=8,
        batch_size=4,
        epochs=2,
        eval_images=0,
        export=False,
    )
    result = CaptionTrainer.train_run(config, **QUIET)
    values, plugins = summaries(os.path.join(config.out, "logs"))
    assert steps(values, "train/loss") == list(range(1, result.global_step + 1))
    assert steps(values, "train/images_per_second") == steps(values, "train/loss")
    assert steps(values, "validation/perplexity") == [2, 4]  # 2 steps per epoch
    assert "validation/bits_per_char" not in values  # captions are scored per token
    assert steps(values, "validation/captions") == [2, 4]
    assert plugins["validation/captions"] == "images"
    width, height, *pngs = values["validation/captions"][-1][1]
    assert len(pngs) == TENSORBOARD_IMAGES and (int(width), int(height)) == (64, 64)
    listed = values["validation/captions_captions"][-1][1].decode("utf-8").splitlines()
    assert len(listed) == TENSORBOARD_IMAGES and listed[0].startswith("1. ")
