"""The model shipped in data/models/shapes: it works with no --model, and its validation metrics
are still the ones docs/captioning.md gives (on the first VAL_IMAGES validation scenes of seed 0,
regenerated here: the shapes generator is deterministic)."""

import json
import os

import pytest

from captioning import caption, shapes
from captioning.coco_data import read_coco_captions
from captioning.inference.loading import (
    BUNDLED_MODEL,
    DecodeOptions,
    caption_files,
    load_caption_model,
)
from captioning.metrics.coco_metrics import score_captions
from helpers import ROOT

SAMPLES = os.path.join(ROOT, "data", "samples")
VAL_IMAGES = 100
# Measured when the model was packaged (docs/captioning.md, "The bundled model"); greedy decoding.
EXPECTED = {"correct": 0.97, "bleu4": 0.986, "cider": 5.26}
TOLERANCE = {"correct": 0.03, "bleu4": 0.02, "cider": 0.05}

pytestmark = pytest.mark.skipif(
    not os.path.isdir(BUNDLED_MODEL), reason="no bundled model in this checkout"
)


def test_caption_without_model_uses_the_bundled_one(capsys):
    images = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.endswith(".png"))
    assert len(images) >= 4
    assert caption.main(images) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == images
    assert all(len(line.split("\t")[1].split()) >= 3 for line in lines)


def test_bundled_model_is_small():
    size = sum(os.path.getsize(os.path.join(BUNDLED_MODEL, f)) for f in os.listdir(BUNDLED_MODEL))
    assert size < 8 * 2**20
    with open(os.path.join(BUNDLED_MODEL, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert not any(os.path.isabs(str(v)) for v in config.values())  # nothing machine-specific


def test_bundled_model_metrics_still_hold(tmp_path):
    shapes.generate(
        shapes.ShapesConfig(out=str(tmp_path), train_size=1, val_size=VAL_IMAGES, seed=0)
    )
    records = read_coco_captions(
        str(tmp_path / "annotations" / "captions_val.json"),
        str(tmp_path / "images"),
        "none",
        log=lambda message: None,
    )
    model = load_caption_model(None)
    results = caption_files([r.path for r in records], model, DecodeOptions(beam_size=1))
    scores = score_captions([r.caption for r in results], records)
    for name, expected in EXPECTED.items():
        assert scores[name] >= expected - TOLERANCE[name], (name, scores)
