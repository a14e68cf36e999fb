"""Fine-tuning, `init_from` (textgen.training.fine_tuning): the merged vocabulary keeps every
token's rows by the token itself, adds new ones and keeps the source's unused ones; frozen weights
stay; the source's architecture wins over a conflicting flag; the bundled model is a source;
config.json records the source checkpoint; a fine-tuning run resumes bit for bit."""

import dataclasses
import hashlib
import json
import math
import os
import shutil

import numpy as np
import pytest

from helpers import QUIET
from textgen import train as train_cli
from textgen.config import FINE_TUNE_LEARNING_RATE, TrainConfig
from textgen.corpus.prepared_corpus import corpus_for_training
from textgen.corpus.stream_batches import StreamBatches, split_train_validation
from textgen.errors import UsageError
from textgen.training import fine_tuning
from textgen.training.metrics_log import FILE, read_rows, step_losses
from textgen.training.run_directory import RunDirectory
from textgen.training.text_trainer import TextTrainer

# The source learns these characters; the target text shares some (at other corpus ids: its
# vocabulary is its own sorted characters), brings new ones (digits, ':', '&', '!', 'Z') and
# lacks others ('q', 'u', 'i', 'c', 'k', ...).
SOURCE_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 60
TARGET_TEXT = "Zed and a dog sat: 42 hens & 7 owls!\n" * 60
SOURCE_WORDS = "the cat sat on the mat . the dog sat on the log .\n" * 40
TARGET_WORDS = "a cat and a dog ran to the park . the bird flew .\n" * 40


@pytest.fixture(scope="module")
def source(train_tiny_run):
    """A two-layer char-level run of 16 units, trained for 3 steps on SOURCE_TEXT."""
    return train_tiny_run("source", SOURCE_TEXT, num_layers=2, max_steps=3)


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "target.txt"
    path.write_text(TARGET_TEXT, encoding="utf-8")
    return str(path)


def fine_tune_config(data, init_from, out, **overrides):
    """The layout of train_tiny_run's (batches of 4 x 10); the model's sizes are the source's."""
    settings = dict(
        data=data,
        init_from=str(init_from),
        out=str(out),
        batch_size=4,
        seq_length=10,
        max_steps=4,
        sample_every=0,
        checkpoint_every=100,
        export=False,
    )
    return TrainConfig(**{**settings, **overrides})


def prepared(config, explicit=(), log=None):
    """A TextTrainer with `config` prepared (model built, weights in), nothing trained."""
    trainer = TextTrainer(config, explicit, log or (lambda message: None), False)
    trainer.prepare()
    trainer.run.unlock()
    trainer.close_logs()
    return trainer


def model_arrays(run):
    groups, progress = RunDirectory(run).load_checkpoint()
    return dict(zip(groups["model"].names, groups["model"])), progress


EMBEDDING = "language_model/embedding/embeddings"
KERNEL = "language_model/logits/kernel"
BIAS = "language_model/logits/bias"


def test_the_merge_keeps_each_tokens_rows_adds_new_ones_and_keeps_unused_ones(
    source, target, tmp_path
):
    lines = []
    trainer = prepared(fine_tune_config(target, source, tmp_path / "run"), log=lines.append)
    source_vocabulary = RunDirectory(source).load_vocabulary()
    corpus_tokens = corpus_vocabulary(trainer.config).tokens  # its own ids: sorted characters
    added = [t for t in corpus_tokens if t not in source_vocabulary]
    unused = [t for t in source_vocabulary.tokens if t not in TARGET_TEXT]
    assert set(added) == set("Z:42&7!") and {"q", "u", "x"} <= set(unused)
    # The source's tokens first, in the source's order, then the new ones in the corpus's order.
    vocabulary = trainer.vocabulary
    assert vocabulary.tokens == source_vocabulary.tokens + added
    assert any(corpus_tokens.index(t) != source_vocabulary.id(t) for t in "adog")  # other ids
    kept = len(corpus_tokens) - len(added)
    assert any(
        f"{len(vocabulary)} tokens, {kept} kept from the source, {len(added)} added, "
        f"{len(unused)} unused" in line
        for line in lines
    ), lines

    src, _ = model_arrays(source)
    model = trainer.model
    embedding = model.embedding.embeddings.numpy()
    kernel = model.output_layer.kernel.numpy()
    bias = model.output_layer.bias.numpy()
    for token in source_vocabulary.tokens:  # unused ones included: the model still knows them
        old, new = source_vocabulary.id(token), vocabulary.id(token)
        np.testing.assert_array_equal(embedding[new], src[EMBEDDING][old])
        np.testing.assert_array_equal(kernel[:, new], src[KERNEL][:, old])
        assert bias[new] == src[BIAS][old]
    for layer in model.recurrent_stack.recurrent_layers:
        for weight in layer.weights:
            key = "language_model/" + weight.path.split("/", 1)[1]
            np.testing.assert_array_equal(weight.numpy(), src[key])

    # New rows: a fresh model's embedding init (Keras' uniform in +-0.05), a fresh output column,
    # the output bias at the log of the token's count in the training text, on the source
    # biases' scale.
    new_ids = [vocabulary.id(t) for t in added]
    rows = embedding[new_ids]
    assert np.all(np.abs(rows) <= 0.05) and np.all(rows != 0)
    assert np.all(kernel[:, new_ids] != 0)
    train_text, _ = split_train_validation(TARGET_TEXT, 0.1)
    source_bias = src[BIAS].astype(np.float64)
    normaliser = source_bias.max() + math.log(np.exp(source_bias - source_bias.max()).sum())
    for token in added:
        share = train_text.count(token) / len(train_text)
        assert bias[vocabulary.id(token)] == pytest.approx(normaliser + math.log(share), abs=1e-5)

    # The batches are the corpus's memory map, remapped batch by batch: they spell the text.
    assert isinstance(trainer.train_batches.inputs, np.memmap)
    inputs, targets = trainer.train_batches[0]
    assert inputs.dtype == np.int32 and inputs.flags.c_contiguous
    first_row = "".join(vocabulary.decode(inputs[0])) + vocabulary.tokens[targets[0, -1]]
    assert first_row == TARGET_TEXT[: len(first_row)]


def corpus_vocabulary(config):
    """The vocabulary of the prepared corpus that `config` trains on (its own ids)."""
    return corpus_for_training(dataclasses.replace(config)).vocabulary


def test_word_level_merges_the_same_way_with_the_new_corpus_limits(train_tiny_run, tmp_path):
    source = train_tiny_run("word_source", SOURCE_WORDS, level="word")
    path = tmp_path / "words.txt"
    path.write_text(TARGET_WORDS, encoding="utf-8")
    lines = []
    # --max-vocab on the new corpus: <unk> and its 6 most frequent words.
    config = fine_tune_config(str(path), source, tmp_path / "run", max_vocab=7)
    trainer = prepared(config, explicit={"max_vocab"}, log=lines.append)
    assert config.level == "word"  # the source's
    source_vocabulary = RunDirectory(source).load_vocabulary()
    corpus = corpus_vocabulary(config)
    assert len(corpus) == 7 and "cat" not in corpus  # the corpus's "cat" is <unk> here
    added = [t for t in corpus.tokens if t not in source_vocabulary]
    unused = [t for t in source_vocabulary.tokens if t not in corpus]
    assert added and "cat" in unused and "<unk>" not in added + unused
    vocabulary = trainer.vocabulary
    assert vocabulary.tokens == source_vocabulary.tokens + added
    assert vocabulary.unknown_token == "<unk>"
    assert any(
        f"{len(corpus) - len(added)} kept from the source, {len(added)} added, "
        f"{len(unused)} unused" in line
        for line in lines
    ), lines
    src, _ = model_arrays(source)
    embedding = trainer.model.embedding.embeddings.numpy()
    for token in ("the", ".", "<unk>", "mat"):  # "mat" is the source's, unused here
        np.testing.assert_array_equal(
            embedding[vocabulary.id(token)], src[EMBEDDING][source_vocabulary.id(token)]
        )


def test_frozen_embedding_and_layers_do_not_change(source, target, tmp_path):
    config = fine_tune_config(
        target, source, tmp_path / "run", freeze_embedding=True, freeze_layers=1, max_steps=6
    )
    TextTrainer.train_run(config, **QUIET)
    src, _ = model_arrays(source)
    tuned, progress = model_arrays(config.out)
    assert progress["global_step"] == 6
    n = len(RunDirectory(source).load_vocabulary())
    np.testing.assert_array_equal(tuned[EMBEDDING][:n], src[EMBEDDING])
    frozen = [k for k in src if "/lstm_0/" in k]
    trained = [k for k in src if "/lstm_1/" in k]
    assert len(frozen) == len(trained) == 3
    for key in frozen:
        np.testing.assert_array_equal(tuned[key], src[key])
    for key in trained:
        assert not np.array_equal(tuned[key], src[key])
    assert not np.array_equal(tuned[KERNEL][:, :n], src[KERNEL])
    # No optimizer slots for what is frozen.
    groups, _ = RunDirectory(config.out).load_checkpoint()
    assert not any("embedding" in k or "lstm_0" in k for k in groups["optimizer"].names)


def test_a_conflicting_size_flag_is_one_error_line(source, target, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data", target, "--init-from", source, "--out", str(out), "--no-progress"]
    assert train_cli.main([*argv, "--hidden-size", "64", "--cell", "gru"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err == (
        f"error: --init-from {source}: --cell 'gru' (the source has 'lstm'), --hidden-size 64 "
        "(the source has 16); a fine-tuned model keeps its source's architecture: drop those "
        "flags"
    )
    assert not out.exists()  # nothing written
    # The source's own value, given explicitly, is no conflict.
    config = fine_tune_config(target, source, out, hidden_size=16)
    assert prepared(config, explicit={"hidden_size"}).config.num_layers == 2


@pytest.mark.parametrize(
    "overrides, explicit, message",
    [
        ({"freeze_layers": 3}, (), "`freeze_layers` 3 is more than the 2 recurrent layers"),
        ({"init_from": "missing"}, (), "`init_from` missing is not a directory"),
        ({"init_from": "", "freeze_embedding": True}, (), "need `init_from`"),
        (
            {"min_learning_rate": 3e-3},
            ("min_learning_rate",),
            "`min_learning_rate` 0.003 is above the `learning_rate` of this fine-tuning run",
        ),
    ],
)
def test_bad_fine_tuning_input_is_a_usage_error(
    source, target, tmp_path, overrides, explicit, message
):
    overrides = {"init_from": source, **overrides}
    config = fine_tune_config(target, overrides.pop("init_from"), tmp_path / "run", **overrides)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        TextTrainer.train_run(config, explicit=explicit, **QUIET)
    assert not (tmp_path / "run").exists()


def test_the_bundled_model_is_a_source_and_config_json_records_it(target, tmp_path):
    config = fine_tune_config(target, fine_tuning.BUNDLED, tmp_path / "run", max_steps=1)
    TextTrainer.train_run(config, **QUIET)
    with open(os.path.join(config.out, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    bundled = RunDirectory(fine_tuning.source_directory(fine_tuning.BUNDLED))
    with open(bundled.checkpoint_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert saved[fine_tuning.RECORD] == {
        "path": os.path.abspath(bundled.checkpoint_path),
        "sha256": digest,
        "step": bundled.load_checkpoint()[1]["global_step"],
    }
    bundled_config = bundled.load_config()
    for name in ("cell", "num_layers", "hidden_size", "embedding_size", "level"):
        assert saved[name] == bundled_config[name]
    assert saved["init_from"] == "bundled"
    assert saved["learning_rate"] == FINE_TUNE_LEARNING_RATE  # not given: fine-tuning's default
    assert RunDirectory(config.out).load_vocabulary().tokens[:65] == (
        bundled.load_vocabulary().tokens
    )


def assert_same_run(run_a, run_b):
    """Bit for bit: every checkpoint array and every step's loss."""
    a, progress_a = RunDirectory(run_a).load_checkpoint()
    b, progress_b = RunDirectory(run_b).load_checkpoint()
    for key in ("global_step", "epoch", "step_in_epoch"):
        assert progress_a[key] == progress_b[key]
    assert set(a) == set(b)
    for group in a:
        assert a[group].names == b[group].names
        for x, y in zip(a[group], b[group]):
            np.testing.assert_array_equal(x, y)
    losses_a, losses_b = (step_losses(read_rows(os.path.join(r, FILE))) for r in (run_a, run_b))
    assert len(losses_a) == progress_a["global_step"]  # each step once, the resumed ones too
    assert losses_a == losses_b


def test_a_stopped_fine_tuning_run_resumes_bit_exact(source, target, tmp_path):
    """Stopped by --max-steps and resumed, with its source gone by then: the run has its merged
    vocabulary and every weight in its own files."""
    copy = tmp_path / "source"
    shutil.copytree(source, copy)
    # A constant rate: the cosine's length would differ between the two.
    config = fine_tune_config(
        target, copy, tmp_path / "straight", max_steps=8, lr_schedule="constant", freeze_layers=1
    )
    TextTrainer.train_run(config, **QUIET)
    split = dataclasses.replace(config, out=str(tmp_path / "split"), max_steps=3)
    TextTrainer.train_run(split, **QUIET)
    shutil.rmtree(copy)
    resumed = dataclasses.replace(split, max_steps=8, resume=True)
    TextTrainer.train_run(resumed, explicit={"max_steps"}, **QUIET)
    assert_same_run(config.out, split.out)


def test_stream_batches_remap_each_batch_of_a_memory_map(tmp_path):
    path = tmp_path / "ids.bin"
    np.arange(7, dtype=np.uint8).repeat(20).tofile(path)
    ids = np.memmap(path, dtype=np.uint8, mode="r")
    remap = np.array([6, 5, 4, 3, 2, 1, 0], dtype=np.int32)
    plain, mapped = StreamBatches(ids, 2, 5), StreamBatches(ids, 2, 5, remap)
    assert isinstance(mapped.inputs, np.memmap)
    for (x, y), (mx, my) in zip(plain, mapped):
        np.testing.assert_array_equal(mx, remap[x])
        np.testing.assert_array_equal(my, remap[y])
        assert mx.dtype == np.int32 and mx.flags.c_contiguous
