"""Corpora of documents: `--data` as a folder or several paths, `--document-boundary`, the
end-of-document token, validation that holds out whole documents, `textgen.sample --documents`
and `--until-end`, the SavedModel's `generate_document`, `textgen.score --per-document`, the
prepared directory's record of its sources, and every bad input as one line that writes
nothing. The corpora are tiny folders generated here."""

import builtins
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import QUIET
from textgen import prepare as prepare_cli
from textgen import sample as sample_cli
from textgen import score as score_cli
from textgen import train as train_cli
from textgen.config import TrainConfig
from textgen.corpus import documents, prepared_corpus, reading
from textgen.corpus.documents import source_files, split_documents
from textgen.corpus.preparation import held_out_documents
from textgen.corpus.prepared_corpus import PreparedCorpus, prepare_corpus, tokenisation
from textgen.corpus.reading import read_text
from textgen.corpus.stream_batches import validation_length
from textgen.corpus.tokenizers import RegexTokenizer
from textgen.corpus.vocabulary import END_OF_DOCUMENT
from textgen.errors import UsageError
from textgen.network.language_model import LanguageModel
from textgen.training.text_trainer import TextTrainer

TINY = ["--hidden-size", "16", "--embedding-size", "8", "--num-layers", "1"]
TINY += ["--batch-size", "4", "--seq-length", "10", "--max-steps", "2", "--sample-every", "0"]
TINY += ["--no-export", "--no-progress"]
WORDS = "the cat sat on a mat and a dog ran far away to its home".split()


def options(**overrides):
    return {**tokenisation(TrainConfig()), **overrides}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def story(seed, sentences=6):
    """A few lines of made-up text, the same for the same seed."""
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(4, 9))) + "." for _ in range(sentences)]
    return "\n".join(lines) + "\n"


def document_folder(root, count=10):
    """`root` holding `count` stories, d00.txt, d01.txt, ..., with d03.txt in a subfolder."""
    for i in range(count):
        name = f"d{i:02d}.txt" if i != 3 else f"sub/d{i:02d}.txt"
        write(root / name, story(i))
    return root


def files_of(root):
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def decoded(corpus, ids):
    return "".join(corpus.vocabulary.decode(ids))


def one_line(status, err, *fragments):
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setattr(prepared_corpus, "cache_root", lambda: str(root))
    return root


# ---- which files, and where documents end ----
def test_a_folder_is_its_files_recursively_in_sorted_order(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt", "sub/deeper/a.md", "z.md", ".hidden.txt"):
        write(tmp_path / "corpus" / name, "x\n")
    write(tmp_path / "corpus" / ".git" / "config.txt", "x\n")
    folder = tmp_path / "corpus"
    relative = [os.path.relpath(p, folder) for p in source_files(str(folder))]
    assert relative == ["a.txt", "b.txt", "sub/c.txt", "sub/deeper/a.md", "z.md"]
    matched = [os.path.relpath(p, folder) for p in source_files(str(folder), "*.txt")]
    assert matched == ["a.txt", "b.txt", "sub/c.txt"]
    # Several paths keep their order; a file named is taken whatever the glob.
    several = source_files([str(folder / "z.md"), str(folder / "sub")], "*.txt")
    assert [os.path.relpath(p, folder) for p in several] == ["z.md", "sub/c.txt"]


def test_each_boundary_rule_cuts_its_documents():
    fortunes = "%\nA fortune.\n\nIt goes on.\n%\n\n  Second one  \n\n%\n%\nThird.\n"
    assert split_documents(fortunes, "separator:%") == [
        "A fortune.\n\nIt goes on.",
        "  Second one  ",
        "Third.",
    ]
    assert split_documents("one\ntwo\n\n\n \nthree\n", "paragraph") == ["one\ntwo", "three"]
    assert split_documents("one\n\ntwo\n three", "line") == ["one", "two", " three"]
    assert split_documents("one\n\ntwo\n", "file") == ["one\n\ntwo\n"]
    assert split_documents("\n\n", "paragraph") == []


def test_a_bad_boundary_rule_names_the_rules(capsys, tmp_path):
    status = prepare_cli.main(
        ["--data", str(write(tmp_path / "a.txt", "x\n")), "--out", str(tmp_path / "p")]
        + ["--document-boundary", "sentence"]
    )
    one_line(status, capsys.readouterr().err, "--document-boundary must be file, line")
    assert not (tmp_path / "p").exists()


# ---- preparing documents ----
@pytest.mark.parametrize("chunk_bytes", [7, 1 << 22])
def test_documents_end_with_the_token_and_validation_holds_out_whole_ones(
    tmp_path, monkeypatch, chunk_bytes
):
    monkeypatch.setattr(reading, "CHUNK_BYTES", chunk_bytes)
    folder = document_folder(tmp_path / "corpus")
    texts = [read_text(p) for p in source_files(str(folder))]
    corpus = prepare_corpus(folder, tmp_path / "p", options(val_fraction=0.2))
    vocabulary = corpus.vocabulary
    assert (
        vocabulary.tokens[0] == END_OF_DOCUMENT and len(vocabulary) == len(set("".join(texts))) + 1
    )
    # No character, and no word, is the end token: it has a space.
    assert " " in END_OF_DOCUMENT and END_OF_DOCUMENT not in "".join(texts)
    train_text = decoded(corpus, corpus.train_ids)
    val_text = decoded(corpus, corpus.val_ids)
    assert train_text.endswith(END_OF_DOCUMENT) and val_text.endswith(END_OF_DOCUMENT)
    train_documents = train_text.split(END_OF_DOCUMENT)[:-1]
    val_documents = val_text.split(END_OF_DOCUMENT)[:-1]
    assert len(val_documents) == 2 and len(train_documents) == 8  # 20% of 10, whole
    held_out = held_out_documents(10, 0.2, seed=0)
    assert val_documents == [t for t, held in zip(texts, held_out) if held]
    assert train_documents == [t for t, held in zip(texts, held_out) if not held]
    # Where each document starts, per split, in token ids.
    train_offsets, val_offsets = corpus.document_offsets
    starts = np.cumsum([0] + [len(t) + 1 for t in train_documents])[:-1]
    assert train_offsets.tolist() == starts.tolist()
    assert val_offsets.tolist() == [0, len(val_documents[0]) + 1]
    header = corpus.header
    assert header["documents"] == {
        "count": 10,
        "boundary": "file",
        "glob": "",
        "data": [str(folder)],
        "end_token": END_OF_DOCUMENT,
        "split": "documents",
        "seed": 0,
        "train": 8,
        "val": 2,
        "order": "corpus",
    }
    assert header["tokens"] == sum(len(t) for t in texts) + 10
    assert header["val_tokens"] == len(corpus.val_ids)
    assert [s["path"] for s in header["sources"]] == source_files(str(folder))
    first = header["sources"][0]
    assert first["size"] == os.path.getsize(first["path"])
    assert first["sha256"] == prepared_corpus.file_sha256(first["path"])


def test_the_held_out_documents_are_a_fixed_seeded_choice(tmp_path):
    assert held_out_documents(10, 0.2, 0).tolist() == held_out_documents(10, 0.2, 0).tolist()
    assert held_out_documents(200, 0.1, 0).sum() == 20
    choices = {tuple(np.flatnonzero(held_out_documents(50, 0.1, seed))) for seed in range(5)}
    assert len(choices) == 5
    assert held_out_documents(2, 0.1, 0).sum() == 1  # at least one, and one left to train on
    assert held_out_documents(3, 0.5, 0).sum() == 2
    folder = document_folder(tmp_path / "corpus")
    val = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        corpus = prepare_corpus(
            folder, tmp_path / name, options(val_fraction=0.3), documents={"seed": seed}
        )
        val[name] = decoded(corpus, corpus.val_ids)
    assert val["a"] == val["b"] != val["c"]


def test_word_level_documents_are_their_tokens_in_chunks_of_any_size(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "CHUNK_BYTES", 7)  # chunks end inside words and documents
    folder = document_folder(tmp_path / "corpus", count=6)
    texts = [read_text(p) for p in source_files(str(folder))]
    corpus = prepare_corpus(folder, tmp_path / "p", options(level="word", val_fraction=0.34))
    assert corpus.vocabulary.tokens[:2] == ["<unk>", END_OF_DOCUMENT]
    tokenizer = RegexTokenizer()
    held_out = held_out_documents(6, 0.34, seed=0)
    for ids, held in ((corpus.train_ids, False), (corpus.val_ids, True)):
        chosen = [t for t, h in zip(texts, held_out) if h == held]
        expected = [token for t in chosen for token in tokenizer.tokenize(t) + [END_OF_DOCUMENT]]
        assert corpus.vocabulary.decode(ids) == expected
    # Bits per character count the end token as one character, as a line end.
    val = [t for t, h in zip(texts, held_out) if h]
    characters = sum(len(tokenizer.detokenize(tokenizer.tokenize(t))) + 1 for t in val)
    assert corpus.val_characters_per_token == pytest.approx(characters / len(corpus.val_ids))


def test_one_file_is_one_document_as_before(tmp_path, small_corpus):
    corpus = prepare_corpus(small_corpus, tmp_path / "p", options())
    text = read_text(small_corpus)
    assert END_OF_DOCUMENT not in corpus.vocabulary
    assert decoded(corpus, np.concatenate([corpus.train_ids, corpus.val_ids])) == text
    assert len(corpus.val_ids) == validation_length(len(text), 0.1)  # the tail, as always
    assert corpus.document_offsets is None
    assert corpus.header["documents"]["split"] == "tail"
    assert corpus.header["source"] == corpus.header["sources"][0]
    assert sorted(os.listdir(tmp_path / "p")) == [
        "header.json",
        "train.bin",
        "val.bin",
        "vocab.json",
    ]
    # A folder of one file, and a file of one line under `line`, are one document too.
    write(tmp_path / "one" / "only.txt", text)
    single = prepare_corpus(tmp_path / "one", tmp_path / "q", options())
    assert single.vocabulary == corpus.vocabulary
    assert np.array_equal(single.val_ids, corpus.val_ids)
    line = prepare_corpus(
        write(tmp_path / "line.txt", "just one line\n"),
        tmp_path / "r",
        options(),
        documents={"document_boundary": "line"},
    )
    assert line.num_documents == 1 and END_OF_DOCUMENT not in line.vocabulary


def test_a_file_cut_at_separators_and_lines(tmp_path):
    entries = [story(i, sentences=2).strip() for i in range(8)]
    fortunes = write(tmp_path / "fortunes", "".join(f"{e}\n%\n" for e in entries))
    corpus = prepare_corpus(
        fortunes,
        tmp_path / "p",
        options(val_fraction=0.25),
        documents={"document_boundary": "separator:%"},
    )
    assert corpus.num_documents == 8 and corpus.header["documents"]["val"] == 2
    train = decoded(corpus, corpus.train_ids).split(END_OF_DOCUMENT)[:-1]
    val = decoded(corpus, corpus.val_ids).split(END_OF_DOCUMENT)[:-1]
    assert sorted(train + val) == sorted(entries) and not set(train) & set(val)
    lines = prepare_corpus(
        fortunes,
        tmp_path / "q",
        options(val_fraction=0.25),
        documents={"document_boundary": "line"},
    )
    assert lines.num_documents == sum(e.count("\n") + 1 for e in entries) + len(entries)


def test_a_changed_or_added_source_file_is_detected(capsys, tmp_path):
    folder = document_folder(tmp_path / "corpus", count=4)
    status = prepare_cli.main(["--data", str(folder), "--out", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert status == 0 and "4 documents (1 held out for validation)" in out, out
    PreparedCorpus.open(tmp_path / "p")
    changed = folder / "d01.txt"
    original = changed.read_bytes()
    changed.write_bytes(original + b"more.\n")
    with pytest.raises(UsageError, match=f"prepared from {changed}, which has changed since"):
        PreparedCorpus.open(tmp_path / "p")
    changed.write_bytes(original)  # touched, same bytes: the hash decides
    PreparedCorpus.open(tmp_path / "p")
    write(folder / "new.txt", "a new document\n")
    with pytest.raises(UsageError, match=r"holds other files since \(1 added, 0 gone\)"):
        PreparedCorpus.open(tmp_path / "p")
    status = train_cli.main(["--data", str(tmp_path / "p"), "--out", str(tmp_path / "run"), *TINY])
    one_line(status, capsys.readouterr().err, "prepare it again with `python -m textgen.prepare")
    assert not (tmp_path / "run").exists()


# ---- bad input: one line, nothing written ----
def make_unreadable(folder, monkeypatch):
    path = write(folder / "secret.txt", "hidden text\n")
    if os.geteuid() != 0:
        path.chmod(0)
        return path
    real_open = builtins.open  # root reads any file: make this one fail to open

    def refusing_open(name, *args, **kwargs):
        if os.fspath(name) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(documents, "open", refusing_open, raising=False)
    return path


@pytest.mark.parametrize(
    "case",
    ["empty folder", "glob matches nothing", "not utf-8", "separator never occurs", "unreadable"],
)
@pytest.mark.parametrize("cli", ["prepare", "train"])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, monkeypatch, cache, case, cli):
    folder = tmp_path / "corpus"
    folder.mkdir()
    flags = []
    if case == "empty folder":
        (folder / "empty").mkdir()
        fragments = [f"{folder} is a directory that holds no files", "--data"]
    else:
        document_folder(folder, count=3)
    if case == "glob matches nothing":
        flags = ["--glob", "*.md"]
        fragments = [f"no file in {folder} matches --glob '*.md'", "d00.txt"]
    elif case == "not utf-8":
        (folder / "d01.txt").write_bytes(b"caf\xc3\xa9\nna\xefve\n")
        fragments = [f"{folder / 'd01.txt'}: line 2, column 3, byte offset 8", "--encoding"]
    elif case == "separator never occurs":
        flags = ["--document-boundary", "separator:%"]
        fragments = ["--document-boundary separator:% never occurs in", "no line of it is '%'"]
    elif case == "unreadable":
        path = make_unreadable(folder, monkeypatch)
        fragments = [f"cannot read corpus file {path}", "--data"]
    before = files_of(tmp_path)
    out = tmp_path / "out"
    main = prepare_cli.main if cli == "prepare" else train_cli.main
    argv = ["--data", str(folder), "--out", str(out), *flags]
    status = main(argv + (TINY if cli == "train" else ["--no-progress"]))
    one_line(status, capsys.readouterr().err, *fragments)
    assert not out.exists() and files_of(tmp_path) == before  # the cache holds nothing either


def test_held_out_documents_too_short_for_a_validation_row(tmp_path, cache):
    folder = tmp_path / "corpus"
    write(folder / "long.txt", story(1, sentences=40))
    write(folder / "short.txt", "hi\n")
    config = TrainConfig(
        data=str(folder), seq_length=10, batch_size=4, val_fraction=0.5, out=str(tmp_path / "r")
    )
    for seed in range(10):  # the seed that holds out the short one
        if held_out_documents(2, 0.5, seed)[1]:
            break
    config.seed = seed
    with pytest.raises(UsageError, match="documents of .* and they have 4 characters"):
        TextTrainer.train_run(config, **QUIET)
    assert not (tmp_path / "r").exists()


# ---- a model trained on documents ----
PARAGRAPHS = [story(i, sentences=3).strip() for i in range(12)]


@pytest.fixture(scope="module")
def run_directory(tmp_path_factory):
    """A tiny char-level run trained on a folder of files of paragraphs, one document each."""
    base = tmp_path_factory.mktemp("documents_run")
    for i in range(0, len(PARAGRAPHS), 3):
        write(base / "corpus" / f"part{i:02d}.txt", "\n\n".join(PARAGRAPHS[i : i + 3]) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepared_corpus, "cache_root", lambda: str(base / "cache"))
        status = train_cli.main(
            ["--data", str(base / "corpus"), "--document-boundary", "paragraph"]
            + ["--out", str(base / "run"), *TINY, "--max-steps", "30", "--learning-rate", "0.02"]
        )
    assert status == 0
    return str(base / "run")


@pytest.fixture(scope="module")
def model(run_directory):
    return LanguageModel.from_run_directory(run_directory)


def test_the_run_records_its_documents(run_directory, model):
    config = json.loads(open(os.path.join(run_directory, "config.json")).read())
    assert config["data"].endswith("corpus") and config["document_boundary"] == "paragraph"
    assert model.vocabulary.tokens[0] == END_OF_DOCUMENT
    assert model.train_config.document_boundary == "paragraph"


def test_sampled_documents_stop_at_the_end_token(model, run_directory, capsys):
    texts = model.sample_documents(4, length=120, seed=3)
    assert len(texts) == 4 and all(END_OF_DOCUMENT not in t and len(t) <= 120 for t in texts)
    assert model.sample_documents(4, length=120, seed=3) == texts
    # Each one is the start of a plain sample after the end token, cut at the next one.
    end = model.vocabulary.id(END_OF_DOCUMENT)
    plain = model._generate(
        np.full((4, 1), end, np.int32), 120, 1.0, 0, 3, model.forbidden_tokens()
    ).numpy()
    for text, row in zip(texts, plain):
        ends = np.flatnonzero(row == end)
        assert text == model.decode(row[: ends[0]] if len(ends) else row)
    primed = model.sample_documents(2, prime="the", length=40, temperature=0)
    assert all(t.startswith("the") for t in primed)
    status = sample_cli.main([run_directory, "--documents", "2", "--length", "120", "--seed", "3"])
    out = capsys.readouterr().out
    assert status == 0 and out == "".join(
        f"---- document {i + 1} ----\n{t}\n" for i, t in enumerate(texts[:2])
    )


def test_until_end_stops_a_sample_and_its_stream_alike(model):
    ends = model.sample(length=200, num_samples=3, seed=1, until_end=True)
    plain = model.sample(length=200, num_samples=3, seed=1)
    for cut, full in zip(ends, plain):
        assert full.startswith(cut) and END_OF_DOCUMENT not in cut
        assert cut == full.split(END_OF_DOCUMENT)[0]
    for seed in range(4):
        streamed = "".join(model.stream(length=200, seed=seed, until_end=True))
        assert streamed == model.sample(length=200, seed=seed, until_end=True)[0]


def test_a_model_of_one_text_has_no_documents(train_tiny_run, capsys):
    run = train_tiny_run("one_text_run", "one text, " * 40)
    for flags in (["--documents", "2"], ["--until-end"]):
        status = sample_cli.main([run, *flags, "--length", "20"])
        name = flags[0]
        one_line(status, capsys.readouterr().err, f"{name} needs a model trained on several")
    status = sample_cli.main([run, "--documents", "2", "--num-samples", "2"])
    one_line(status, capsys.readouterr().err, "drop --num-samples")


def test_the_saved_model_generates_whole_documents(model, tmp_path):
    from textgen.generation.saved_model import export_saved_model

    export_saved_model(model, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    generate = loaded.signatures["generate"]
    inputs = {"length": 120, "temperature": 1.0, "top_k": 0, "seed": 3}
    inputs = {k: tf.constant(v) for k, v in inputs.items()}
    assert sorted(generate.structured_input_signature[1]) == sorted(["prompt", *inputs])
    document = loaded.signatures["generate_document"]
    assert document.structured_input_signature == generate.structured_input_signature
    texts = document(prompt=tf.constant([""] * 4), **inputs)["text"].numpy()
    assert [t.decode() for t in texts] == model.sample_documents(4, length=120, seed=3)
    primed = document(prompt=tf.constant(["the", "the"]), **{**inputs, "seed": tf.constant(0)})
    expected = model.sample_documents(2, prime="the", length=120, seed=0)
    assert [t.decode() for t in primed["text"].numpy()] == expected
    plain = generate(prompt=tf.constant(["the"]), **inputs)["text"].numpy()[0].decode()
    assert plain == model.sample("the", 120, seed=3)[0]
    config = json.loads(loaded.config_json.numpy().decode())
    assert config["end_of_document"] == END_OF_DOCUMENT
    # Without XLA, the graph loop: the same argmax documents.
    export_saved_model(model, str(tmp_path / "no_xla"), xla=False)
    graph = tf.saved_model.load(str(tmp_path / "no_xla")).signatures["generate_document"]
    argmax = {**inputs, "temperature": tf.constant(0.0)}
    for prompt in ("", "a", "the"):
        text = graph(prompt=tf.constant([prompt]), **argmax)["text"].numpy()[0].decode()
        assert text == model.sample_documents(1, prompt, 120, temperature=0)[0]


def test_score_per_document_cuts_the_text_as_training_did(model, run_directory, tmp_path, capsys):
    text = "\n\n".join(PARAGRAPHS[:3]) + "\n"
    path = write(tmp_path / "three.txt", text)
    status = score_cli.main([run_directory, str(path), "--per-document", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and [row["text"] for row in rows] == PARAGRAPHS[:3]
    end = model.vocabulary.id(END_OF_DOCUMENT)
    for row, paragraph in zip(rows, PARAGRAPHS):
        ids = np.concatenate([[end], model.encode(paragraph), [end]]).astype(np.int32)
        log_probs, _ = model.token_log_probs(ids[None, :-1], ids[None, 1:], model.initial_states(1))
        assert row["log_prob"] == pytest.approx(float(np.sum(log_probs)), abs=1e-3)
        assert row["tokens"] == len(paragraph) + 1 and row["characters"] == len(paragraph) + 1
    status = score_cli.main([run_directory, str(path), "--per-document"])
    lines = capsys.readouterr().out.splitlines()
    assert (
        status == 0
        and len(lines) == 3
        and lines[0].endswith(PARAGRAPHS[0].split("\n")[0][:60].rstrip() + " ...")
    )
    status = score_cli.main([run_directory, str(path), "--per-document", "--per-line"])
    one_line(status, capsys.readouterr().err, "pass one of them")


def test_a_resumed_run_keeps_its_boundary_rule(run_directory, capsys):
    status = train_cli.main(
        ["--out", run_directory, "--resume", "--document-boundary", "line", *TINY[-2:]]
    )
    one_line(status, capsys.readouterr().err, "--document-boundary 'line' (run has 'paragraph')")


def test_several_paths_are_documents_in_their_order(tmp_path, cache):
    first = write(tmp_path / "first.txt", story(1, sentences=20))
    second = write(tmp_path / "more" / "second.txt", story(2, sentences=20))
    args = vars(train_cli.build_parser().parse_args(["--data", str(first), str(tmp_path / "more")]))
    config = TrainConfig(**args, out=str(tmp_path / "run"))
    assert config.data == [str(first), str(tmp_path / "more")]
    corpus = prepared_corpus.corpus_for_training(config, args.keys(), progress=False)
    assert corpus.num_documents == 2
    assert [s["path"] for s in corpus.header["sources"]] == [str(first), str(second)]
    assert TrainConfig(data=[str(first)]).data == str(first)  # one path stays a string


def test_the_compiled_loop_stops_at_the_end_token_as_the_graph_loop_does():
    from textgen.generation.decode_loop import compiled_decode_loop, decode_loop, end_after_first
    from textgen.generation.samplers import GreedySampler

    def count_up(tokens, states):  # the next token is the one after, mod 7; 5 ends a row
        return tf.one_hot((tokens + 1) % 7, 7) * 10.0, states

    first = tf.constant([0, 3, 6, 5])
    states = [tf.zeros([4, 1])]
    plain = compiled_decode_loop(count_up, first, states, 150, GreedySampler())
    ended = compiled_decode_loop(count_up, first, states, 150, GreedySampler(), end_token=5)
    graph, lengths = decode_loop(count_up, first, states, 150, GreedySampler(), end_token=5)
    # decode_loop leaves zeros after the step where every row had ended; its rows agree up to
    # there (LeanLanguageModel fills them with the end token).
    assert ended.numpy().tolist() == end_after_first(graph, 5).numpy().tolist()
    assert ended.numpy().tolist() == end_after_first(plain, 5).numpy().tolist()
    assert ended.numpy()[:, :3].tolist() == [[1, 2, 3], [4, 5, 5], [0, 1, 2], [6, 0, 1]]
    assert lengths.numpy().tolist() == [4, 1, 5, 6] and ended.shape == (4, 150)
