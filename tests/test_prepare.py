"""textgen.prepare and training on prepared corpora: the ids decode to the text, the dtype is the
narrowest, training on the memory map is training on the text, and every bad input is one line
that changes nothing."""

import dataclasses
import json
import os

import numpy as np
import pytest

from helpers import (
    QUIET,
    ROOT,
    TINY_RUN_FLAGS,
    assert_same_checkpoint,
    file_size_limit,
    one_error_line,
    run_python_module,
    snapshot,
)
from textgen import prepare as prepare_cli
from textgen.config import VAL_MAX_TOKENS_FLOOR, TrainConfig
from textgen.corpus import prepared_corpus, reading
from textgen.corpus.preparation import ids_dtype
from textgen.corpus.prepared_corpus import PreparedCorpus, prepare_corpus, tokenisation
from textgen.corpus.reading import read_text
from textgen.corpus.stream_batches import auto_val_max_tokens
from textgen.corpus.tokenizers import RegexTokenizer
from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError
from textgen.training.text_trainer import TextTrainer


def options(**overrides):
    return {**tokenisation(TrainConfig()), **overrides}


def all_ids(corpus):
    return np.concatenate([corpus.train_ids, corpus.val_ids]).tolist()


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 7 bytes: every chunk boundary case (a \\r\\n, a multi-byte character, a word
    cut in two) happens in a short text."""
    monkeypatch.setattr(reading, "CHUNK_BYTES", 7)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setattr(prepared_corpus, "cache_root", lambda: str(root))
    return root


def test_char_ids_decode_to_the_text(tmp_path, tiny_chunks):
    text = "Café 🙂 naïve\r\nzweite Zeile — 中文\r\n" * 30 + "end"
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    corpus = prepare_corpus(path, tmp_path / "p", options(val_fraction=0.2))
    expected = read_text(path)
    assert expected == text.replace("\r\n", "\n")  # BOM dropped, line ends normalised
    assert "".join(corpus.vocabulary.decode(all_ids(corpus))) == expected
    assert corpus.vocabulary == Vocabulary.from_characters(expected)
    assert len(corpus.val_ids) == round(len(expected) * 0.2)
    header = json.loads((tmp_path / "p" / "header.json").read_text())
    assert header["dtype"] == "uint8" and header["characters_per_token"] == 1.0
    assert header["source"]["size"] == path.stat().st_size


def test_word_ids_are_the_tokens_of_the_whole_text(tmp_path, small_corpus, tiny_chunks):
    corpus = prepare_corpus(small_corpus, tmp_path / "p", options(level="word", min_count=3))
    tokens = RegexTokenizer().tokenize(read_text(small_corpus))
    vocabulary = Vocabulary.from_tokens(tokens, ["<unk>"], min_count=3, unknown_token="<unk>")
    assert corpus.vocabulary == vocabulary
    assert all_ids(corpus) == vocabulary.encode(tokens)
    assert corpus.tokenisation["segmenter"] == "regex"  # auto, resolved
    val_tokens = tokens[len(tokens) - len(corpus.val_ids) :]
    # Bits per character are taken against the text the validation tokens stand for.
    expected = len(RegexTokenizer().detokenize(val_tokens)) / len(val_tokens)
    assert corpus.val_characters_per_token == pytest.approx(expected, rel=1e-12)
    unknown = vocabulary.encode(tokens).count(0)
    assert corpus.coverage == pytest.approx(1 - unknown / len(tokens))


@pytest.mark.integration  # the worker processes
def test_jieba_in_worker_processes_gives_jieba_tokens(tmp_path):
    jieba_tokenizer = pytest.importorskip("textgen.corpus.tokenizers").JiebaTokenizer
    pytest.importorskip("jieba")
    text = "我们今天一起去公园散步。\n他们在图书馆看书，天气非常好。\n" * 400
    (tmp_path / "zh.txt").write_text(text, encoding="utf-8")
    corpus = prepare_corpus(tmp_path / "zh.txt", tmp_path / "p", options(level="word"), workers=2)
    assert corpus.tokenisation["segmenter"] == "jieba"
    assert corpus.vocabulary.decode(all_ids(corpus)) == jieba_tokenizer().tokenize(text)


@pytest.mark.parametrize(
    "size, dtype", [(256, "uint8"), (257, "uint16"), (65_536, "uint16"), (65_537, "uint32")]
)
def test_the_narrowest_dtype_at_the_boundaries(tmp_path, size, dtype):
    assert ids_dtype(size) == dtype
    # A character corpus with exactly `size` distinct code points (no surrogates).
    points = [c for c in range(0x100, 0x100 + size + 2048) if not 0xD800 <= c < 0xE000][:size]
    text = "".join(map(chr, points)) * 2
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    corpus = prepare_corpus(tmp_path / "u.txt", tmp_path / "p", options())
    assert len(corpus.vocabulary) == size and corpus.train_ids.dtype == np.dtype(dtype)
    assert os.path.getsize(tmp_path / "p" / "train.bin") == len(corpus.train_ids) * (
        np.dtype(dtype).itemsize
    )
    assert "".join(corpus.vocabulary.decode(all_ids(corpus))) == text


def test_training_on_the_memory_map_is_training_on_the_text(tiny_config, monkeypatch, cache):
    config = dataclasses.replace(tiny_config, max_steps=8, dropout=0.1)
    trainer = TextTrainer(dataclasses.replace(config), (), **QUIET)
    trainer.prepare()
    # The batches are views of the memory map: nothing the size of the corpus is copied.
    assert isinstance(trainer.train_batches.inputs, np.memmap)
    assert isinstance(trainer.val_batches.inputs, np.memmap)
    mapped = trainer.train()

    in_memory = PreparedCorpus.open

    def opened_into_memory(path, check_source=True):
        corpus = in_memory(path, check_source)
        text = read_text(tiny_config.data)
        ids = np.array(corpus.vocabulary.encode(list(text)), dtype=np.int32)
        split = len(corpus.train_ids)
        assert ids[:split].tolist() == corpus.train_ids.tolist()
        corpus.train_ids, corpus.val_ids = ids[:split], ids[split:]
        return corpus

    monkeypatch.setattr(PreparedCorpus, "open", staticmethod(opened_into_memory))
    memory = TextTrainer.train_run(dataclasses.replace(config, out=config.out + "-memory"), **QUIET)
    np.testing.assert_array_equal(mapped.step_losses, memory.step_losses)
    assert mapped.final_val_loss == memory.final_val_loss


def test_a_prepared_directory_resumes_exactly(tiny_config, tmp_path):
    prepare_corpus(tiny_config.data, tmp_path / "prepared", options())
    config = dataclasses.replace(
        tiny_config, data=str(tmp_path / "prepared"), dropout=0.1, max_steps=20
    )
    TextTrainer.train_run(dataclasses.replace(config, out=str(tmp_path / "whole")), **QUIET)
    TextTrainer.train_run(
        dataclasses.replace(config, max_steps=9, out=str(tmp_path / "split")), **QUIET
    )
    resumed = dataclasses.replace(config, out=str(tmp_path / "split"), resume=True)
    assert TextTrainer.train_run(resumed, explicit={"max_steps"}, **QUIET).global_step == 20
    assert_same_checkpoint(tmp_path / "whole", tmp_path / "split")
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["data"] == str(tmp_path / "prepared") and saved["level"] == "char"


def test_a_text_file_is_prepared_once_into_the_cache(tiny_config, cache):
    lines = []
    for run in ("a", "b"):
        TextTrainer.train_run(
            dataclasses.replace(tiny_config, max_steps=1, out=tiny_config.out + run),
            log=lines.append,
            progress_bar=False,
        )
    assert sum(line.startswith("prepared ") for line in lines) == 1
    (entry,) = os.listdir(cache)
    assert PreparedCorpus.open(cache / entry).num_tokens == len(read_text(tiny_config.data))
    # Another flag is another entry.
    TextTrainer.train_run(
        dataclasses.replace(tiny_config, max_steps=1, val_fraction=0.2, out=tiny_config.out + "c"),
        **QUIET,
    )
    assert len(os.listdir(cache)) == 2


def test_eval_every_evaluates_between_epoch_ends(tiny_config, cache):
    lines = []
    # 42 steps per epoch: evaluations at steps 5 and 10, then the run's end at 12.
    config = dataclasses.replace(tiny_config, max_steps=12, eval_every=5)
    result = TextTrainer.train_run(config, log=lines.append, progress_bar=False)
    evaluations = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in evaluations] == ["5", "10"]
    assert all("val" in line for line in evaluations)
    assert np.isfinite(result.final_val_loss)


def test_val_max_tokens_takes_the_same_first_batches_of_every_stream(tiny_config, cache):
    config = dataclasses.replace(tiny_config, val_max_tokens=330)
    trainer = TextTrainer(config, (), **QUIET)
    trainer.prepare()
    batches = trainer.val_batches
    assert batches.tokens_per_batch == 160 and trainer.val_steps == 2  # 330 // 160
    assert len(batches) > 2
    first = trainer.evaluate()
    assert trainer.evaluate() == first  # the same subset every time

    # By hand: the mean loss of the first two batches, from zero states.
    states = trainer.model.initial_states(batches.batch_size)
    losses = []
    for k in range(2):
        loss, states = trainer.eval_step(*batches[k], states)
        losses.append(float(loss))
    assert first == pytest.approx(np.mean(losses), rel=1e-6)
    trainer.run.unlock()


def test_the_auto_cap_keeps_small_corpora_whole_and_bounds_short_runs():
    config = TrainConfig()
    # An epoch-end evaluation of a large corpus: 0.1 of the epoch's tokens.
    assert auto_val_max_tokens(config, 100_000, 3_200) == 32_000_000
    assert auto_val_max_tokens(dataclasses.replace(config, eval_every=1000), 100_000, 3_200) == (
        320_000
    )
    # A 3-step run, or one bounded by minutes only, evaluates at most the floor.
    assert auto_val_max_tokens(dataclasses.replace(config, max_steps=3), 100_000, 3_200) == (
        VAL_MAX_TOKENS_FLOOR
    )
    assert auto_val_max_tokens(dataclasses.replace(config, max_minutes=10), 100_000, 3_200) == (
        VAL_MAX_TOKENS_FLOOR
    )
    # tiny-shakespeare's validation text is under the floor: its pass is whole.
    assert VAL_MAX_TOKENS_FLOOR > 111_540


def test_the_auto_cap_is_saved_with_the_run(tiny_config, cache):
    TextTrainer.train_run(dataclasses.replace(tiny_config, max_steps=2), **QUIET)
    saved = json.loads(open(os.path.join(tiny_config.out, "config.json")).read())
    assert saved["val_max_tokens"] == VAL_MAX_TOKENS_FLOOR


# ---- bad input: one line, nothing changed ----
def run_prepare(capsys, argv):
    status = prepare_cli.main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip()


@pytest.fixture
def prepared(small_corpus, tmp_path, capsys):
    status, out, err = run_prepare(
        capsys, ["--data", str(small_corpus), "--out", str(tmp_path / "prepared")]
    )
    assert status == 0 and out.startswith("prepared ") and "uint8" in out, (out, err)
    return tmp_path / "prepared"


def train_on(capsys, data, out, *flags):
    from textgen import train as train_cli

    status = train_cli.main(["--data", str(data), "--out", str(out), *TINY_RUN_FLAGS, *flags])
    return status, capsys.readouterr().err.strip()


def edit_header(directory, **changes):
    header = json.loads((directory / "header.json").read_text())
    header.update(changes)
    (directory / "header.json").write_text(json.dumps(header))


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (lambda d: edit_header(d, version=0), ["format version 0", "reads version 1"]),
        (lambda d: edit_header(d, format="nanogpt"), ["not the header of a textgen prepared"]),
        (lambda d: (d / "header.json").write_text("{"), ["not valid JSON"]),
        (lambda d: (d / "train.bin").write_bytes(b"ab"), ["train.bin holds 2 bytes"]),
        (lambda d: edit_header(d, dtype="float32"), ["dtype 'float32' is not one of"]),
    ],
)
def test_a_prepared_directory_of_another_format(capsys, prepared, tmp_path, damage, fragments):
    damage(prepared)
    before = snapshot(prepared)
    status, err = train_on(capsys, prepared, tmp_path / "run")
    one_error_line(status, err, *fragments, "prepare it again with `python -m textgen.prepare")
    assert snapshot(prepared) == before and not (tmp_path / "run").exists()


def test_a_prepared_directory_whose_source_changed(capsys, prepared, small_corpus, tmp_path):
    original = small_corpus.read_bytes()
    with open(small_corpus, "a", encoding="utf-8") as f:
        f.write("Second Citizen:\nWe are accounted poor citizens.\n")
    before = snapshot(prepared)
    status, err = train_on(capsys, prepared, tmp_path / "run")
    one_error_line(status, err, "was prepared from", "has changed since", "prepare it again")
    assert snapshot(prepared) == before and not (tmp_path / "run").exists()
    # Touched but the same bytes is no change: the hash decides.
    small_corpus.write_bytes(original)
    PreparedCorpus.open(prepared)


def test_a_vocabulary_that_overflows_the_dtype(capsys, prepared, tmp_path):
    tokens = [chr(0x100 + i) for i in range(300)]
    Vocabulary(tokens).save(prepared / "vocab.json")
    edit_header(prepared, vocabulary_size=300)
    status, err = train_on(capsys, prepared, tmp_path / "run")
    one_error_line(status, err, "300 tokens", "dtype uint8 can number (256)")
    assert not (tmp_path / "run").exists()


def test_a_flag_that_contradicts_the_prepared_directory(capsys, prepared, tmp_path):
    status, err = train_on(capsys, prepared, tmp_path / "run", "--level", "word")
    one_error_line(status, err, "--level 'word' does not match", "prepared with 'char'")


def test_prepare_bad_input(capsys, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"abc\n" * 3 + b"caf\xe9\n")
    status, _, err = run_prepare(
        capsys, ["--data", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "p")]
    )
    one_error_line(status, err, "line 4, column 4, byte offset 15", "--encoding")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    status, _, err = run_prepare(
        capsys, ["--data", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "mine")]
    )
    one_error_line(status, err, "holds other files than a prepared corpus")
    with pytest.raises(SystemExit) as exit_status:  # argparse's, shortened by textgen.cli
        prepare_cli.main(["--data", str(tmp_path / "bad.txt")])
    assert exit_status.value.code == 2 and "required: --out" in capsys.readouterr().err
    status, _, err = run_prepare(capsys, ["--out", str(tmp_path / "p"), "--workers", "-1"])
    one_error_line(status, err, "--workers must be >= 0")
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "mine"]


@pytest.mark.integration
def test_a_disk_too_small_writes_nothing(tmp_path, small_corpus):
    """A file-size limit makes the write past it fail as a full disk does (EFBIG)."""
    out = tmp_path / "out" / "prepared"
    result = run_python_module(
        "textgen.prepare",
        *["--data", small_corpus, "--out", out, "--no-progress"],
        cwd=ROOT,
        preexec_fn=file_size_limit(4_000),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    err = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr
    assert err[-1].startswith("error: no space left to write") and "nothing was written" in err[-1]
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path / "out") == []  # no half-written directory, no temporary one


def test_a_corpus_too_short_after_preparing(tmp_path, cache):
    (tmp_path / "short.txt").write_text("to be or not to be")
    config = TrainConfig(data=str(tmp_path / "short.txt"), out=str(tmp_path / "run"))
    with pytest.raises(UsageError, match="has 18 characters"):
        TextTrainer.train_run(config, **QUIET)
    assert not (tmp_path / "run").exists()
