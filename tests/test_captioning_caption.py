"""`python -m captioning.caption` and `python -m captioning.export`: captions from a run directory
and from its SavedModel (reloaded in a process that cannot import this project), one error line
per bad image, JSON output and the HTML gallery (rendered by a real headless Chromium)."""

import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from captioning import caption, export
from captioning.datasets.tokens import SPECIALS
from captioning.training.caption_trainer import CaptionTrainer
from helpers import QUIET, run_main, tiny_caption_config
from isolated_process import run_isolated


@pytest.fixture(scope="module")
def run_directory(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("caption_run") / "run"
    # Enough steps that the captions are not all alike, so that comparisons mean something.
    CaptionTrainer.train_run(
        tiny_caption_config(
            shapes_data,
            out,
            epochs=40,
            eval_images=0,
            hidden_size=32,
            learning_rate=1e-2,
            export=True,
        ),
        **QUIET,
    )
    return str(out)


def test_training_exports_a_saved_model(run_directory, images, capsys):
    exported = os.path.join(run_directory, "saved_model")
    assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
    from_export = cli_captions(capsys, *images, "--model", exported)
    from_run = cli_captions(capsys, *images, "--model", run_directory)
    assert [r["caption"] for r in from_export] == [r["caption"] for r in from_run]


@pytest.fixture(scope="module")
def saved_model(run_directory, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("caption_export") / "saved_model")
    assert export.main([run_directory, out]) == 0
    return out


@pytest.fixture(scope="module")
def images(shapes_data):
    return sorted(str(p) for p in (shapes_data / "images").glob("val_*.png"))


run_cli = functools.partial(run_main, caption.main)  # run_cli(capsys, *argv)


def cli_captions(capsys, *argv):
    status, out, err = run_cli(capsys, "--json", *argv)
    assert status == 0, err
    return json.loads(out)


def test_one_line_per_image_path_then_caption(run_directory, images, capsys):
    status, out, err = run_cli(capsys, *images, "--model", run_directory, "--max-length", 6)
    assert status == 0, err
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == images
    for line in lines:
        words = line.split("\t")[1].split()
        assert 0 < len(words) <= 6 and not set(words) & set(SPECIALS)


def test_json_has_file_caption_and_log_prob(run_directory, images, capsys):
    results = cli_captions(capsys, *images, "--model", run_directory, "--beam-size", 3)
    assert [r["file"] for r in results] == images
    for r in results:
        assert set(r) == {"file", "caption", "log_prob"} and r["log_prob"] < 0
    # Batching does not change a caption.
    one_by_one = cli_captions(capsys, *images, "--model", run_directory, "--batch-size", 1)
    assert [r["caption"] for r in one_by_one] == [r["caption"] for r in results]
    np.testing.assert_allclose(
        [r["log_prob"] for r in one_by_one], [r["log_prob"] for r in results], rtol=1e-5
    )


def test_sampling_is_seeded(run_directory, images, capsys):
    flags = ["--model", run_directory, "--temperature", 1.5]
    first = cli_captions(capsys, *images, *flags, "--seed", 1)
    assert cli_captions(capsys, *images, *flags, "--seed", 1) == first
    others = [cli_captions(capsys, *images, *flags, "--seed", s) for s in (2, 3)]
    assert any(o != first for o in others)


def bad_files(directory):
    directory.mkdir()
    corrupt = directory / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    svg = directory / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n')
    folder = directory / "folder.png"
    folder.mkdir()
    return {
        "missing": directory / "missing.png",
        "corrupt": corrupt,
        "unsupported": svg,
        "directory": folder,
    }


def test_each_bad_image_gets_one_line_and_the_others_are_captioned(
    run_directory, images, tmp_path, capsys
):
    bad = bad_files(tmp_path / "bad")
    argv = [
        images[0],
        bad["missing"],
        bad["corrupt"],
        images[1],
        bad["unsupported"],
        bad["directory"],
    ]
    status, out, err = run_cli(capsys, *argv, "--model", run_directory)
    assert status == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == images[:2]
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "missing.png: no such file" in lines[0]
    assert "corrupt.png: corrupt PNG" in lines[1]
    assert "drawing.svg: SVG images are not supported" in lines[2]
    assert "folder.png: is a directory" in lines[3]


def test_bad_options_are_one_line(run_directory, images, capsys, tmp_path):
    for argv, message in (
        (["--beam-size", 0], "--beam-size must be >= 1"),
        (["--max-length", 0], "--max-length must be >= 1"),
        (["--temperature", -1], "--temperature must be >= 0"),
        (["--model", tmp_path / "nowhere"], "no such directory"),
        (["--n-best", 4, "--beam-size", 3], "--n-best 4 is above --beam-size 3"),
        (["--n-best", 0], "--n-best must be >= 1"),
        (["--n-best", 2, "--temperature", 1], "needs beam search"),
    ):
        status, out, err = run_cli(capsys, images[0], "--model", run_directory, *argv)
        assert status == 2 and err.count("\n") == 1 and message in err, err


# ---- n-best ----


def check_n_best(results, single, k):
    for result, best in zip(results, single, strict=True):
        beams = result["n_best"]
        log_probs = [b["log_prob"] for b in beams]
        assert len(beams) == k
        assert log_probs == sorted(log_probs, reverse=True)  # best first
        assert len({b["caption"] for b in beams}) == k  # distinct
        assert (result["caption"], result["log_prob"]) == (beams[0]["caption"], log_probs[0])
        assert beams[0]["caption"] == best["caption"]  # the single-caption output
        assert log_probs[0] == pytest.approx(best["log_prob"], abs=1e-5)


def test_n_best_beams_are_sorted_distinct_and_the_first_is_the_caption(
    run_directory, images, capsys
):
    flags = ("--model", run_directory, "--beam-size", 4)
    single = cli_captions(capsys, *images, *flags)
    check_n_best(cli_captions(capsys, *images, *flags, "--n-best", 3), single, 3)
    status, out, err = run_cli(capsys, images[0], *flags, "--n-best", 3)
    assert status == 0, err
    lines = [line.split("\t") for line in out.splitlines()]
    assert [(f, rank) for f, rank, _, _ in lines] == [(images[0], str(r)) for r in (1, 2, 3)]
    assert lines[0][3] == single[0]["caption"]
    assert float(lines[0][2]) == pytest.approx(single[0]["log_prob"], abs=1e-4)


def test_saved_model_n_best_equals_the_run_directory(saved_model, run_directory, images, capsys):
    flags = ("--beam-size", 3, "--n-best", 3)
    from_export = cli_captions(capsys, *images, "--model", saved_model, *flags)
    from_run = cli_captions(capsys, *images, "--model", run_directory, *flags)
    check_n_best(from_export, cli_captions(capsys, *images, "--model", saved_model), 3)
    for a, b in zip(from_export, from_run, strict=True):
        assert [x["caption"] for x in a["n_best"]] == [x["caption"] for x in b["n_best"]]
        np.testing.assert_allclose(
            [x["log_prob"] for x in a["n_best"]], [x["log_prob"] for x in b["n_best"]], atol=1e-4
        )


def test_gallery_lists_the_n_best_beams(run_directory, images, tmp_path, capsys):
    page = tmp_path / "gallery.html"
    results = cli_captions(
        capsys, images[0], "--model", run_directory, "--n-best", 2, "--html", page
    )
    text = page.read_text(encoding="utf-8")
    assert text.count("<li>") == 2
    for beam in results[0]["n_best"]:
        assert f"<li>{beam['caption']} " in text


# ---- the SavedModel ----

# Run by a fresh interpreter that cannot import this project (isolated_process.PREAMBLE first).
ISOLATED_SCRIPT = r"""

model = tf.saved_model.load(sys.argv[1])
images = [open(p, "rb").read() for p in sys.argv[2:]]
out = {}
for beam in (1, 3):
    r = model.signatures["caption"](image_bytes=tf.constant(images), beam_size=tf.constant(beam),
                                    max_length=tf.constant(20))
    out[beam] = {"caption": [c.decode() for c in r["caption"].numpy()],
                 "log_prob": [float(x) for x in r["log_prob"].numpy()]}
default = model.caption(tf.constant(images))
out["default"] = [c.decode() for c in default["caption"].numpy()]
served = model.signatures["serving_default"](
    image_bytes=tf.constant(images), beam_size=tf.constant(3), max_length=tf.constant(20))
out["serving_default"] = [c.decode() for c in served["caption"].numpy()]
out["config"] = json.loads(model.signatures["config"]()["config_json"].numpy())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def isolated(saved_model, images, tmp_path_factory):
    return run_isolated(
        ISOLATED_SCRIPT, [saved_model, *images], tmp_path_factory.mktemp("isolated_caption")
    )


@pytest.mark.integration
@pytest.mark.parametrize("beam", [1, 3])
def test_saved_model_elsewhere_matches_the_cli(isolated, run_directory, images, capsys, beam):
    expected = cli_captions(capsys, *images, "--model", run_directory, "--beam-size", beam)
    got = isolated[str(beam)]
    assert got["caption"] == [r["caption"] for r in expected]
    np.testing.assert_allclose(
        got["log_prob"], [r["log_prob"] for r in expected], rtol=1e-4, atol=1e-4
    )
    if beam == 3:
        assert len(set(got["caption"])) > 1  # the model tells the images apart


@pytest.mark.integration
def test_saved_model_defaults_and_config(isolated):
    assert isolated["default"] == isolated["3"]["caption"]  # beam 3, 20 words
    assert isolated["serving_default"] == isolated["3"]["caption"]
    assert isolated["config"]["image_size"] == 64 and isolated["config"]["default_beam_size"] == 3


def test_cli_on_the_saved_model_equals_the_run_directory(
    saved_model, run_directory, images, capsys
):
    from_export = cli_captions(capsys, *images, "--model", saved_model)
    from_run = cli_captions(capsys, *images, "--model", run_directory)
    assert [r["caption"] for r in from_export] == [r["caption"] for r in from_run]
    np.testing.assert_allclose(
        [r["log_prob"] for r in from_export], [r["log_prob"] for r in from_run], rtol=1e-4
    )
    # Sampling goes through the caption_with_options signature: the same draws as the run's.
    sampled = ("--temperature", "0.9", "--top-p", "0.95", "--seed", "5")
    from_export = cli_captions(capsys, *images, "--model", saved_model, *sampled)
    from_run = cli_captions(capsys, *images, "--model", run_directory, *sampled)
    assert [r["caption"] for r in from_export] == [r["caption"] for r in from_run]
    status, out, err = run_cli(capsys, images[0], "--model", saved_model, "--allow-unk")
    assert status == 2 and "needs a run directory" in err and err.count("\n") == 1


@pytest.mark.integration
def test_saved_model_cli_lists_the_signatures(saved_model):
    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or shutil.which(
        "saved_model_cli"
    )
    if cli is None:
        pytest.skip("saved_model_cli is not installed")
    result = subprocess.run(
        [cli, "show", "--dir", saved_model, "--all"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in (
        "signature_def['caption']",
        "signature_def['serving_default']",
        "image_bytes",
        "beam_size",
        "max_length",
        "log_prob",
        "signature_def['caption_n_best']",
        "n_best",
        "signature_def['caption_with_options']",
        "block_repeat_ngrams",
        "top_p",
    ):
        assert name in result.stdout


def test_a_failed_export_leaves_nothing(run_directory, tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError):
        export.main([run_directory, str(tmp_path / "out")])
    assert os.listdir(tmp_path) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    assert export.main([run_directory, str(tmp_path / "full")]) == 2
    assert "--overwrite" in capsys.readouterr().err


# ---- the HTML gallery ----


def test_html_gallery_shows_each_image_beside_its_caption(run_directory, images, tmp_path, capsys):
    page = tmp_path / "gallery.html"
    results = cli_captions(capsys, *images[:2], "--model", run_directory, "--html", page)
    text = page.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 2
    for r in results:
        assert r["caption"] in text and os.path.basename(r["file"]) in text


def chromium():
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


@pytest.mark.integration
@pytest.mark.skipif(
    chromium() is None, reason="Chromium is not installed (apt-get install chromium)"
)
def test_gallery_renders_in_headless_chromium(run_directory, tmp_path, capsys):
    # An image of one flat, unusual colour: if the browser shows it, the screenshot has it.
    image = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (250, 20, 200)).save(image)
    page = tmp_path / "gallery.html"
    [result] = cli_captions(capsys, image, "--model", run_directory, "--html", page)
    browser = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=900,500",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        browser + [f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    flat = np.abs(pixels - [250, 20, 200]).sum(-1) < 30
    assert flat.sum() > 200 * 200  # shown at 320 px wide
    columns = np.flatnonzero(flat.any(axis=0))
    # The caption is drawn to the right of the image: dark text pixels there.
    right = pixels[:, columns.max() + 10 :]
    assert (right.sum(-1) < 200).sum() > 50
    dom = subprocess.run(
        browser + ["--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert result["caption"] in dom
