import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `--fused auto` measures which recurrent kernel is fastest (textgen.network.kernel_choice); the
# tests
# take the C++ ops unmeasured, so that no comparison between two runs hinges on a timing.
# tests/test_kernel_choice.py unsets it to test the measurement itself.
os.environ.setdefault("TEXTGEN_KERNEL", "native")
# Likewise generation takes the XLA-compiled loop at every batch size unmeasured
# (textgen.generation.loop_choice; tests/test_generation_choice.py measures).
os.environ.setdefault("TEXTGEN_GENERATION", "xla")

import pytest  # noqa: E402

from helpers import SMALL_TEXT, TRAIN_IMAGES, VAL_IMAGES, snapshot  # noqa: E402
from textgen.config import TrainConfig  # noqa: E402


@pytest.fixture
def small_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SMALL_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def tiny_config(small_corpus, tmp_path):
    """A model and layout small enough that a few dozen steps take seconds."""
    return TrainConfig(
        data=str(small_corpus),
        hidden_size=32,
        embedding_size=16,
        num_layers=2,
        batch_size=8,
        seq_length=20,
        epochs=3,
        sample_every=0,
        checkpoint_every=5,
        export=False,
        out=str(tmp_path / "run"),
        # A constant rate: a run stopped by --max-steps and resumed with a larger
        # one follows the uninterrupted run only if the schedule does not depend
        # on the run's planned length.
        lr_schedule="constant",
    )


@pytest.fixture(scope="session")
def train_tiny_run(tmp_path_factory):
    """A function (name, corpus text, **TrainConfig overrides) -> the directory of a real textgen
    run trained for a few steps on that text: a 16-unit model, batches of 4 x 10, no samples, one
    checkpoint at the end. Modules build their module-scoped run directories with it."""
    from textgen.training.text_trainer import TextTrainer

    def train_tiny_run(name, corpus, **overrides):
        base = tmp_path_factory.mktemp(name)
        path = base / "corpus.txt"
        path.write_text(corpus, encoding="utf-8")
        settings = dict(
            data=str(path),
            hidden_size=16,
            embedding_size=8,
            num_layers=1,
            batch_size=4,
            seq_length=10,
            max_steps=2,
            sample_every=0,
            checkpoint_every=100,
            out=str(base / "run"),
        )
        config = TrainConfig(**{**settings, **overrides})
        TextTrainer.train_run(config, log=lambda message: None, progress_bar=False)
        return config.out

    return train_tiny_run


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory):
    """The captioning tests' data set, generated once per test run: 64x64 shapes scenes, 12 to
    train on and 4 to validate (helpers.TRAIN_IMAGES, VAL_IMAGES), seed 5, and their COCO caption
    files (helpers.caption_data_flags). Every module reads the same files, so a test that changes
    one works on a copy; the files are checked unchanged at the end of the run."""
    from captioning import shapes

    out = tmp_path_factory.mktemp("shapes")
    shapes.generate(
        shapes.ShapesConfig(out=str(out), train_size=TRAIN_IMAGES, val_size=VAL_IMAGES, seed=5)
    )
    before = snapshot(out)
    yield out
    assert snapshot(out) == before, f"a test changed the shared shapes data in {out}"


@pytest.fixture
def kernel_choice_cache(monkeypatch, tmp_path):
    """The measured kernel and generation-loop choices go to this test's own file (returned)."""
    from textgen.network import kernel_choice

    path = tmp_path / "kernel-choice.json"
    monkeypatch.setattr(kernel_choice, "cache_path", lambda: path)
    return path
