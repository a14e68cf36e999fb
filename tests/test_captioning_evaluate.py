"""`python -m captioning.evaluate`: the COCO results file, the seven pycocoevalcap metrics (PTB
tokenizer and METEOR in Java), the no-Java fallback, correctness on shapes scenes, skipped
images and one-line errors. METEOR's JVM takes seconds to load, so only two tests start it."""

import functools
import io
import json
import os
import re
import shutil

import pytest
from PIL import Image

from captioning import evaluate
from captioning.metrics import coco_metrics
from captioning.training.caption_trainer import CaptionTrainer
from helpers import QUIET, ROOT, caption_val_flags, run_main, run_python_module, tiny_caption_config

pytest.importorskip("pycocoevalcap")
NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def needs_java(test):
    """Skipped where there is no Java; marked integration: the Java scorers run as processes."""
    skip = pytest.mark.skipif(
        coco_metrics.find_java() is None, reason="needs Java (PTB tokenizer, METEOR)"
    )
    return pytest.mark.integration(skip(test))


REFERENCES = {
    1: ["A small red circle above a large blue square.", "A red circle is above a blue square."],
    2: ["A green triangle left of a yellow star.", "A small green triangle to the left of a star."],
    3: ["Two dogs play in the park.", "Dogs playing on grass."],
}
IDENTICAL = {i: refs[0] for i, refs in REFERENCES.items()}
WRONG = {1: "a green triangle", 2: "two dogs play", 3: "a red circle above a square"}


@pytest.fixture(scope="module")
def run_directory(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate_run") / "run"
    CaptionTrainer.train_run(tiny_caption_config(shapes_data, out, eval_images=0), **QUIET)
    return str(out)


run_cli = functools.partial(run_main, evaluate.main)  # run_cli(capsys, *argv)


def printed_metrics(out):
    return {name: float(value) for name, value in re.findall(r"^(\S+)\s+(\d+\.\d{3})$", out, re.M)}


@needs_java
def test_cli_writes_coco_results_and_prints_seven_metrics(
    run_directory, shapes_data, tmp_path, capsys
):
    from pycocotools.coco import COCO

    results = tmp_path / "results.json"
    status, out, err = run_cli(
        capsys,
        "--model",
        run_directory,
        *caption_val_flags(shapes_data),
        "--results",
        results,
        "--beam-size",
        2,
        "--max-length",
        8,
        "--batch-size",
        3,
    )
    assert status == 0, err
    assert "warning" not in err
    entries = json.loads(results.read_text())
    annotations = json.loads((shapes_data / "annotations" / "captions_val.json").read_text())
    assert [e["image_id"] for e in entries] == [image["id"] for image in annotations["images"]]
    for entry in entries:
        assert set(entry) == {"image_id", "caption"} and 0 < len(entry["caption"].split()) <= 8
    # pycocotools reads it back as a results file for these annotations.
    coco = COCO(str(shapes_data / "annotations" / "captions_val.json"))
    assert len(coco.loadRes(str(results)).getImgIds()) == len(entries)

    metrics = printed_metrics(out)
    assert list(metrics)[:7] == list(NAMES)
    assert all(0 <= metrics[n] <= 1 for n in NAMES if n != "CIDEr") and metrics["CIDEr"] >= 0
    assert re.search(r"^correct\s+\d+\.\d%", out, re.M)
    assert out.startswith(f"{len(entries)} images captioned (beam 2)")
    assert f"wrote {results}" in out


@needs_java
def test_coco_metrics_of_captions_identical_to_a_reference():
    log = []
    scores = coco_metrics.coco_metrics(REFERENCES, IDENTICAL, log=log.append)
    assert log == []
    assert list(scores) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L"):
        assert scores[key] == pytest.approx(1.0, abs=1e-6), key
    assert scores["CIDEr"] > 5


def test_known_values_and_a_wrong_caption_scores_lower(monkeypatch):
    # The same pycocoevalcap scorers on the Python tokenisation (no JVM start: fast).
    monkeypatch.setattr(coco_metrics, "find_java", lambda: None)
    quiet = coco_metrics.coco_metrics(
        {1: ["a red square"]}, {1: "a red circle"}, log=lambda m: None
    )
    assert quiet["Bleu_1"] == pytest.approx(2 / 3)  # 2 of 3 words, no brevity penalty
    assert quiet["ROUGE_L"] == pytest.approx(2 / 3)  # longest common subsequence 2 of 3
    right = coco_metrics.coco_metrics(REFERENCES, IDENTICAL, log=lambda m: None)
    wrong = coco_metrics.coco_metrics(REFERENCES, WRONG, log=lambda m: None)
    assert (
        right["Bleu_4"] == pytest.approx(1.0)
        and right["ROUGE_L"] == pytest.approx(1.0)
        and right["CIDEr"] > 5
    )
    for key in right:
        assert wrong[key] < right[key] / 2, key


def test_without_java_the_cli_warns_and_prints_bleu_rouge_cider(
    run_directory, shapes_data, monkeypatch, capsys
):
    monkeypatch.setattr(coco_metrics, "find_java", lambda: None)
    status, out, err = run_cli(capsys, "--model", run_directory, *caption_val_flags(shapes_data))
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "METEOR skipped" in warnings[0] and "PTB tokenizer" in warnings[0]
    metrics = printed_metrics(out)
    assert set(NAMES) - set(metrics) == {"METEOR"} and "METEOR" not in out
    assert re.search(r"^correct\s+\d+\.\d%", out, re.M)


@pytest.mark.integration  # runs the fake java
def test_a_java_that_does_not_run_falls_back_too(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "java").write_text(
        "#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n"
    )
    (fake / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    log = []
    scores = coco_metrics.coco_metrics(REFERENCES, IDENTICAL, log=log.append)
    assert len(log) == 1 and "PTB tokenizer" in log[0] and "METEOR skipped" in log[0]
    assert "METEOR" not in scores and scores["Bleu_4"] == pytest.approx(1.0)


def test_unreadable_images_are_skipped_and_counted(
    run_directory, shapes_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(
        coco_metrics, "find_java", lambda: None
    )  # the Java scorers are not what this tests
    images = tmp_path / "images"
    shutil.copytree(shapes_data / "images", images)
    annotations = json.loads((shapes_data / "annotations" / "captions_val.json").read_text())
    first, second = (images / image["file_name"] for image in annotations["images"][:2])
    first.write_text("not an image")  # caught while reading the annotations
    buffer = io.BytesIO()
    Image.open(second).convert("RGB").save(buffer, "JPEG")
    second.write_bytes(buffer.getvalue()[:-200])  # a truncated JPEG passes verify(); decoding fails
    results = tmp_path / "results.json"
    status, out, err = run_cli(
        capsys,
        "--model",
        run_directory,
        "--results",
        results,
        "--images",
        images,
        "--annotations",
        shapes_data / "annotations" / "captions_val.json",
    )
    assert status == 0, err
    count = len(annotations["images"])
    assert out.startswith(f"{count - 2} images captioned (beam 3), 1 skipped (unreadable)")
    assert str(first) in err and str(second) in err
    assert [e["image_id"] for e in json.loads(results.read_text())] == [
        i["id"] for i in annotations["images"][2:]
    ]


@pytest.mark.integration
def test_bad_input_is_one_line_exit_2(run_directory, shapes_data, tmp_path, capsys):
    missing = tmp_path / "missing.json"
    env = {**os.environ, "PYTHONPATH": ROOT}
    process = run_python_module(
        "captioning.evaluate",
        "--model",
        run_directory,
        "--annotations",
        missing,
        "--images",
        shapes_data / "images",
        env=env,
        cwd=tmp_path,
    )
    assert process.returncode == 2 and process.stdout == ""
    assert process.stderr.strip().splitlines() == [
        f"error: annotation file {missing} does not exist; pass the path of a JSON file"
    ]
    for flags, expected in (
        (["--beam-size", "0"], "--beam-size must be >= 1"),
        (["--max-images", "-1"], "--max-images must be >= 0"),
        (["--results", str(tmp_path / "no" / "r.json")], "does not exist"),
        (["--model", str(tmp_path / "nowhere")], "no such directory"),
    ):
        status, out, err = run_cli(
            capsys, "--model", run_directory, *caption_val_flags(shapes_data), *flags
        )
        assert status == 2 and out == "", flags
        lines = [line for line in err.splitlines() if line]
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], (
            flags,
            err,
        )


def test_help_documents_every_flag():
    text = evaluate.build_parser().format_help()
    for field in (
        "annotations",
        "images",
        "model",
        "results",
        "split",
        "beam_size",
        "max_length",
        "batch_size",
        "max_images",
    ):
        assert "--" + field.replace("_", "-") in text
    assert text.count("(default") + text.count("(required)") >= 9
