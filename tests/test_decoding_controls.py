"""The captioner's decoding controls (length penalty, n-gram and word blocking, bad endings,
diverse groups, nucleus sampling) through a run directory and through the exported
SavedModel's `caption_with_options`: the defaults give the output of the code before the
controls existed, bit for bit, and each control reaches the search in both. What each control
does to a search is tested on hand-made models in test_beam_controls.py."""

import glob
import json
import os

import numpy as np
import pytest

from captioning.datasets.images import load_image
from captioning.datasets.tokens import BAD_ENDINGS, REPEATABLE_WORDS
from captioning.inference.loading import DecodeOptions, load_caption_model
from captioning.inference.saved_model import export_saved_model
from captioning.models.captioner import Captioner
from helpers import ROOT
from textgen.errors import UsageError

BUNDLED = os.path.join(ROOT, "data", "models", "shapes")
GOLDEN = os.path.join(ROOT, "tests", "golden", "bundled_shapes_decoding.json")
# The options each golden entry was decoded with.
GOLDEN_OPTIONS = {
    "beam3": DecodeOptions(),
    "greedy": DecodeOptions(beam_size=1),
    "ln": DecodeOptions(length_normalization=0.7),
    "nbest": DecodeOptions(beam_size=4, n_best=3),
    "sample": DecodeOptions(temperature=0.8, top_k=5, seed=3),
}


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def pixels():
    paths = sorted(glob.glob(os.path.join(ROOT, "data", "samples", "*.png")))
    return np.stack([load_image(path, 64) for path in paths])


@pytest.fixture(scope="module")
def run_model():
    return load_caption_model(BUNDLED)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "shapes")
    export_saved_model(Captioner.from_run_directory(BUNDLED), path)
    return load_caption_model(path)


def decode(model, pixels, options):
    if options.n_best > 1:
        return model.n_best_pixels(pixels, options)
    return model.caption_pixels(pixels, options)


def as_hex(log_probs):
    return np.asarray(log_probs, np.float32).tobytes().hex()


def same_as_recorded(captions, log_probs, recorded, host_bits):
    """The captions exactly; the float32 log-probabilities bit for bit on the host they were
    recorded on (`host_bits`), and within 1e-5 elsewhere, where other matmul kernels round
    differently."""
    expected_captions, expected_hex = recorded
    assert captions == expected_captions
    if host_bits:
        assert as_hex(log_probs) == expected_hex
    np.testing.assert_allclose(
        np.asarray(log_probs, np.float32).ravel(),
        np.frombuffer(bytes.fromhex(expected_hex), np.float32),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("name", list(GOLDEN_OPTIONS))
def test_the_defaults_decode_as_before(golden, pixels, run_model, saved, name):
    # Recorded on an Intel Xeon with AVX-512 and AMX (family 6 model 167): bit for bit there.
    host_bits = recording_host()
    captions, log_probs = decode(run_model, pixels, GOLDEN_OPTIONS[name])
    same_as_recorded(captions, log_probs, golden["run_directory"][name], host_bits)
    if name in golden["saved_model"]:
        captions, log_probs = decode(saved, pixels, GOLDEN_OPTIONS[name])
        same_as_recorded(captions, log_probs, golden["saved_model"][name], host_bits)


def recording_host():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return False
    return "GenuineIntel" in info and "\nmodel\t\t: 167\n" in info and "amx_tile" in info


def test_caption_with_options_at_its_defaults_is_the_caption_signature(pixels, saved):
    """The signature that takes every control, given the values that change nothing, gives the
    plain signatures' captions and log-probabilities, bit for bit."""
    for options in (DecodeOptions(), DecodeOptions(beam_size=1)):
        captions, log_probs = saved._with_options(pixels, options)
        plain = saved.caption_pixels(pixels, options)
        assert [row[0] for row in captions] == plain[0]
        assert as_hex([row[0] for row in log_probs]) == as_hex(plain[1])
    options = DecodeOptions(beam_size=4, n_best=3)
    assert saved._with_options(pixels, options)[0] == saved.n_best_pixels(pixels, options)[0]


def words(caption):
    return caption.split()


CONTROLLED = {
    "block_repeat_ngrams": DecodeOptions(block_repeat_ngrams=1),
    "no_repeat_words": DecodeOptions(no_repeat_words=True),
    "length_penalty": DecodeOptions(beam_size=5, length_penalty=4.0),
    "bad_endings": DecodeOptions(bad_endings=True, max_length=6),
    "nucleus": DecodeOptions(temperature=1.0, top_p=0.01, seed=4),
}


def test_each_control_does_what_it_promises_on_the_bundled_model(pixels, run_model):
    plain = run_model.caption_pixels(pixels, DecodeOptions())[0]
    # Every reference caption of a scene of two or more shapes says "a" more than once.
    assert any(len(set(words(c))) < len(words(c)) for c in plain)
    blocked = run_model.caption_pixels(pixels, CONTROLLED["block_repeat_ngrams"])[0]
    assert all(len(set(words(c))) == len(words(c)) for c in blocked), blocked
    no_repeat = run_model.caption_pixels(pixels, CONTROLLED["no_repeat_words"])[0]
    for caption in no_repeat:
        content = [w for w in words(caption) if w not in REPEATABLE_WORDS]
        assert len(content) == len(set(content)), caption
    longer = run_model.caption_pixels(pixels, CONTROLLED["length_penalty"])[0]
    shorter = run_model.caption_pixels(pixels, DecodeOptions(beam_size=5))[0]
    assert np.mean([len(words(c)) for c in longer]) >= np.mean([len(words(c)) for c in shorter])
    # Six words are too few for a scene of two shapes: cut at the limit, a caption ends on "a"
    # ("a large purple triangle above a") ...
    cut = run_model.caption_pixels(pixels, DecodeOptions(max_length=6))[0]
    assert any(words(c)[-1] in BAD_ENDINGS for c in cut), cut
    # ... and with --bad-endings none does.
    kept = run_model.caption_pixels(pixels, CONTROLLED["bad_endings"])[0]
    assert not any(words(c)[-1] in BAD_ENDINGS for c in kept), kept
    # A nucleus of 1% holds only the most probable word: sampling from it is greedy decoding.
    nucleus = run_model.caption_pixels(pixels, CONTROLLED["nucleus"])[0]
    assert nucleus == run_model.caption_pixels(pixels, DecodeOptions(beam_size=1))[0]


@pytest.mark.parametrize("name", list(CONTROLLED) + ["diverse"])
def test_the_saved_model_decodes_with_options_as_the_run_directory(pixels, run_model, saved, name):
    options = CONTROLLED.get(name) or DecodeOptions(
        beam_size=4, n_best=4, diverse_groups=2, diversity=3.0
    )
    expected = decode(run_model, pixels, options)
    captions, log_probs = decode(saved, pixels, options)
    assert captions == expected[0]
    np.testing.assert_allclose(log_probs, expected[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "options, fragment",
    [
        (DecodeOptions(diverse_groups=2), "`diverse_groups` 2 must divide `beam_size` 3"),
        (DecodeOptions(length_penalty=1, length_normalization=1), "pass one"),
        (DecodeOptions(top_p=0), "`top_p` must be in (0, 1]"),
        (DecodeOptions(block_repeat_ngrams=-1), "`block_repeat_ngrams` must be >= 0"),
    ],
)
def test_bad_options_are_one_error_naming_them(options, fragment):
    with pytest.raises(UsageError) as error:
        options.check()
    assert fragment in str(error.value) and "\n" not in str(error.value)
