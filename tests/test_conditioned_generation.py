"""Generation conditioned on a label (`--labels`): the labels a folder or a JSON-lines file
gives, the label of every training position, the one projection Wih that the captioner shares,
the lean generation model agreeing with the Keras one, a conditioned model learning what its
label says, fine-tuning from an unconditioned model starting exactly at it, resume, the CLIs
and the SavedModel."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import QUIET, assert_same_checkpoint, one_error_line, run_main
from textgen import sample as sample_cli
from textgen import score as score_cli
from textgen.config import TrainConfig
from textgen.corpus.documents import NO_LABEL, file_labels, labelled_documents
from textgen.corpus.labelled_stream_batches import LabelledStreamBatches
from textgen.corpus.preparation import held_out_documents
from textgen.corpus.prepared_corpus import PreparedCorpus, document_options, prepare_corpus
from textgen.corpus.vocabulary import END_OF_DOCUMENT
from textgen.errors import UsageError
from textgen.generation.log_probability import step_log_probs
from textgen.network.language_model import LanguageModel
from textgen.network.lean_language_model import LeanLanguageModel, lean_weights
from textgen.training.text_trainer import TextTrainer

# Two labels whose documents differ only in their letter: a model can tell them apart from the
# second character on, but must take the first from the label.
DOCUMENTS = {"ex": "x", "why": "y"}


# The tokenisation flags of `prepare_corpus`: characters, every one kept, a quarter held out.
PREPARE_OPTIONS = {
    "encoding": "utf-8",
    "keep_newlines": False,
    "level": "char",
    "segmenter": "auto",
    "min_count": 1,
    "max_vocab": 0,
    "val_fraction": 0.25,
}


def write_folder(root, count=40):
    """A folder of two category files, documents between % lines, lengths 6 to 15."""
    root.mkdir(parents=True, exist_ok=True)
    for name, letter in DOCUMENTS.items():
        entries = [letter * (6 + i % 10) + "." for i in range(count)]
        (root / name).write_text("\n%\n".join(entries) + "\n", encoding="utf-8")
    return root


def labelled_config(data, out, **overrides):
    settings = dict(
        data=str(data),
        document_boundary="separator:%",
        labels="folder",
        hidden_size=24,
        embedding_size=8,
        label_embedding_size=4,
        num_layers=1,
        batch_size=4,
        seq_length=16,
        max_steps=150,
        learning_rate=1e-2,
        val_fraction=0.1,
        sample_every=0,
        checkpoint_every=1000,
        export=False,
        lr_schedule="constant",
        out=str(out),
    )
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("labelled") / "data")


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """A conditioned run that has learned the two labels, and its SavedModel."""
    config = labelled_config(folder, tmp_path_factory.mktemp("run") / "run", export=True)
    TextTrainer.train_run(config, **QUIET)
    return config.out


# ---- labels from the data ----


def test_folder_labels_name_the_top_folder_or_the_file(tmp_path):
    (tmp_path / "data" / "positive" / "deep").mkdir(parents=True)
    (tmp_path / "data" / "positive" / "deep" / "a.txt").write_text("good")
    (tmp_path / "data" / "cookie").write_text("fortune")
    (tmp_path / "data" / "notes.txt").write_text("note")
    (tmp_path / "single.md").write_text("one")
    data = [str(tmp_path / "data"), str(tmp_path / "single.md")]
    assert file_labels(data) == ["cookie", "notes", "positive", "single"]


def test_jsonl_gives_a_document_and_a_label_per_line_and_none_without_one(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [
        {"text": "first one", "label": "a"},
        {"text": "no label here"},
        {"text": "third", "label": None},
        {"text": "fourth\nline", "label": "b"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    assert labelled_documents(str(path), labels="jsonl") == [
        ("first one", "a"),
        ("no label here", NO_LABEL),
        ("third", NO_LABEL),
        ("fourth\nline", "b"),
    ]


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("{not json", "line 2: not JSON"),
        ('{"label": "a"}', 'line 2: no "text" string'),
        ('{"text": "t", "label": ["a"]}', 'line 2: "label" must be a non-empty string'),
    ],
)
def test_a_bad_jsonl_line_is_one_error_naming_file_and_line(tmp_path, line, fragment):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=fragment) as error:
        labelled_documents(str(path), labels="jsonl")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_the_prepared_corpus_keeps_every_documents_label_in_its_split(folder, tmp_path):
    documents = {"document_boundary": "separator:%", "labels": "folder", "seed": 3}
    prepare_corpus(str(folder), tmp_path / "prepared", PREPARE_OPTIONS, False, 1, documents)
    corpus = PreparedCorpus.open(tmp_path / "prepared")
    assert corpus.label_names == [NO_LABEL, "ex", "why"]
    expected = labelled_documents(str(folder), "separator:%", "folder")
    held = held_out_documents(len(expected), 0.25, 3)
    names = np.array(corpus.label_names)
    end = corpus.vocabulary.id(END_OF_DOCUMENT)
    for split, ids, offsets, labels in zip(
        (~held, held),
        (corpus.train_ids, corpus.val_ids),
        corpus.document_offsets,
        corpus.document_labels,
    ):
        wanted = [pair for pair, keep in zip(expected, split) if keep]
        assert list(names[labels]) == [label for _, label in wanted]
        for (text, _), start in zip(wanted, offsets):  # each label sits on its own document
            assert corpus.vocabulary.decode(ids[start : start + len(text)]) == list(text)
            assert ids[start + len(text)] == end


def test_labels_need_several_documents(tmp_path):
    (tmp_path / "one.txt").write_text("a single text\n")
    config = labelled_config(tmp_path / "one.txt", tmp_path / "run", document_boundary="file")
    with pytest.raises(UsageError, match="`labels` folder needs several documents"):
        TextTrainer.train_run(config, **QUIET)


# ---- the label of every training position ----


def test_each_position_has_the_label_of_its_targets_document():
    # Documents of 3, 5 and 4 tokens (each ending with its end token 9), labelled 1, 2, 1.
    ids = np.array([1, 1, 9, 2, 2, 2, 2, 9, 3, 3, 3, 9, 0], np.int32)
    offsets, labels = [0, 3, 8], [1, 2, 1]
    batches = LabelledStreamBatches(ids, 2, 3, None, offsets, labels, vocabulary_size=10)
    inputs, targets = batches[0]
    joint = [batches[k][0] for k in range(len(batches))]
    joint = np.concatenate(joint, axis=1)
    tokens, label_ids = joint % 10, joint // 10
    np.testing.assert_array_equal(tokens.ravel(), ids[:12])
    # Position p is labelled by the document of p + 1: the end token of document 0 (p = 2)
    # predicts document 1's first token, under document 1's label.
    np.testing.assert_array_equal(label_ids.ravel(), [1, 1, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(targets, batches.targets[:, :3])


def test_label_dropout_gives_a_seeded_share_of_documents_none():
    ids = np.arange(2001, dtype=np.int32) % 7
    offsets = np.arange(0, 2000, 2)  # 1,000 documents of two tokens
    labels = np.ones(1000, np.int64)
    first = LabelledStreamBatches(ids, 4, 10, None, offsets, labels, 7, label_dropout=0.2, seed=5)
    again = LabelledStreamBatches(ids, 4, 10, None, offsets, labels, 7, label_dropout=0.2, seed=5)
    assert 0.15 < np.mean(first.document_labels == 0) < 0.25
    np.testing.assert_array_equal(first.document_labels, again.document_labels)
    assert np.all(first.document_labels[first.document_labels != 0] == 1)


# ---- one model, three ways to run it ----


def conditioned_model(cell, injection, vocabulary=("\n", "a", "b", "c", END_OF_DOCUMENT)):
    model = LanguageModel(
        list(vocabulary),
        cell=cell,
        num_layers=2,
        hidden_size=8,
        embedding_size=4,
        labels=[NO_LABEL, "p", "q"],
        label_embedding_size=3,
        label_injection=injection,
    )
    model.build()
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("injection", ["every-step", "document-start"])
def test_the_lean_model_the_table_path_and_the_gather_path_agree(cell, injection):
    """The same log-probabilities from the training forward pass (with the stack's joint table
    lookup, where it pays, and without) and from the generation-time lean step that the
    SavedModel runs, for per-row labels."""
    model = conditioned_model(cell, injection)
    rng = np.random.default_rng(0)
    end = model.vocabulary.id(END_OF_DOCUMENT)
    tokens = rng.integers(0, 5, size=(3, 30)).astype(np.int32)
    tokens[:, 0] = end
    targets = np.roll(tokens, -1, axis=1)
    labels = np.array([1, 2, 0], np.int32)
    joint = model.joint_ids(tokens, labels[:, None])
    long_rows, _ = model.token_log_probs(joint, targets, model.initial_states(3))  # 90 > 20
    states, pieces = model.initial_states(3), []
    for t in range(30):  # 3 tokens a call: the joint table (15 rows) is not smaller, so gather
        log_probs, states = model.token_log_probs(
            joint[:, t : t + 1], targets[:, t : t + 1], states
        )
        pieces.append(log_probs.numpy())
    np.testing.assert_allclose(np.concatenate(pieces, 1), long_rows.numpy(), atol=1e-5)
    lean = LeanLanguageModel(
        {k: tf.constant(v) for k, v in lean_weights(model).items()},
        cell,
        2,
        8,
        end_of_document=model.lean_end_of_document(),
    )
    lengths = tf.fill([3], 30)
    lean_total = step_log_probs(
        lean.step, tokens, targets, lengths, lean.initial_states(3, tf.constant(labels))
    )
    np.testing.assert_allclose(lean_total.numpy(), long_rows.numpy().sum(1), rtol=1e-5)
    # The label matters: under other labels the same text scores otherwise.
    other, _ = model.token_log_probs(
        model.joint_ids(tokens, (labels[:, None] + 1) % 3), targets, model.initial_states(3)
    )
    assert not np.allclose(other.numpy(), long_rows.numpy())


def test_the_captioner_and_the_text_model_share_the_projection():
    """Both split the first kernel through textgen.network.conditioning: Wih is its rows after
    the token embedding's."""
    import inspect

    from captioning.models import captioner
    from textgen.network import conditioning

    model = conditioned_model("lstm", "every-step")
    wxh, wih = conditioning.input_projections(model.recurrent_stack, model.embedding_size)
    assert wxh.shape == (4, 32) and wih.shape == (3, 32)
    assert "conditioning.input_projections" in inspect.getsource(captioner.Captioner)
    assert "conditioning.conditioned_inputs" in inspect.getsource(captioner.Captioner)


def test_a_labelled_config_round_trips():
    model = conditioned_model("gru", "document-start")
    again = LanguageModel.from_config(model.get_config())
    assert again.labels == model.labels and again.label_injection == "document-start"
    assert again.label_embedding_size == 3


# ---- what a trained conditioned model does ----


def test_the_label_decides_what_a_document_is(trained, folder):
    model = LanguageModel.from_run_directory(trained)
    assert model.labels == [NO_LABEL, "ex", "why"]
    documents = model.sample_documents(4, length=30, temperature=0.0, label="why")
    assert all(document.startswith("yyyy") for document in documents), documents
    assert model.sample(length=10, temperature=0.0, label="ex")[0].startswith("xxxx")
    texts = ["xxxxxxx.", "yyyyyyyyy.", "xxxxxxxxxxx."]
    scores, names = model.classify(texts)
    assert [names[i] for i in scores.argmax(1)] == ["ex", "why", "ex"]
    # The true label is worth most at each document's first letter: well over a nat.
    true = model.score_each(texts, documents=True, label=["ex", "why", "ex"])
    none = model.score_each(texts, documents=True)
    assert sum(t["log_prob"] for t in true) > sum(n["log_prob"] for n in none) + 1.0


def test_the_saved_model_takes_a_label_and_lists_the_labels(trained):
    model = LanguageModel.from_run_directory(trained)
    loaded = tf.saved_model.load(os.path.join(trained, "saved_model"))
    listed = loaded.signatures["labels"]()["labels"].numpy().astype(str).tolist()
    assert listed == model.labels
    arguments = dict(length=tf.constant(12), temperature=tf.constant(0.0))
    arguments.update(top_k=tf.constant(0), seed=tf.constant(0))
    texts = (
        loaded.signatures["generate"](
            prompt=tf.constant(["", ""]), label=tf.constant(["ex", "why"]), **arguments
        )["text"]
        .numpy()
        .astype(str)
        .tolist()
    )
    assert texts == model.sample(length=12, temperature=0.0, label=["ex", "why"], num_samples=2)
    scored = loaded.signatures["score"](text=tf.constant(["yyyyyy."]), label=tf.constant(["why"]))
    expected = model.score("yyyyyy.", label="why")["log_prob"]
    np.testing.assert_allclose(scored["log_prob"].numpy()[0], expected, rtol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="this model knows ex, why"):
        loaded.signatures["generate"](
            prompt=tf.constant([""]), label=tf.constant(["zed"]), **arguments
        )


def test_sample_and_score_take_labels_and_classify(trained, tmp_path, capsys):
    status, out, err = run_main(
        sample_cli.main,
        capsys,
        trained,
        "--label",
        "ex",
        "why",
        "--length",
        "8",
        "--temperature",
        "0",
        "--num-samples",
        "1",
    )
    assert status == 0, err
    assert "---- sample 1 (ex) ----\nxxxx" in out and "---- sample 2 (why) ----\nyyyy" in out
    status, _, err = run_main(sample_cli.main, capsys, trained, "--label", "zed")
    one_error_line(status, err, "unknown --label 'zed'", "ex, why")
    text = tmp_path / "two.txt"
    text.write_text("yyyyyyyy.\n%\nxxxxxx.\n", encoding="utf-8")
    status, out, err = run_main(
        score_cli.main, capsys, trained, str(text), "--per-document", "--classify", "--json"
    )
    assert status == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["label"] for row in rows] == ["why", "ex"]
    assert set(rows[0]["log_probs"]) == {"ex", "why"}
    (tmp_path / "one.txt").write_text("yyyyyyy.", encoding="utf-8")
    status, out, err = run_main(
        score_cli.main, capsys, trained, str(tmp_path / "one.txt"), "--label", "why"
    )
    assert status == 0 and "bits per character" in out, err


def test_a_label_for_an_unconditioned_model_is_one_error_line(capsys):
    status, _, err = run_main(sample_cli.main, capsys, "--label", "ex")
    one_error_line(status, err, "--label", "trained without labels")


# ---- fine-tuning and resume ----


def test_a_conditioned_model_fine_tuned_from_an_unconditioned_one_starts_at_it(folder, tmp_path):
    source = labelled_config(folder, tmp_path / "source", labels="", max_steps=5)
    TextTrainer.train_run(source, **QUIET)
    target = labelled_config(folder, tmp_path / "target", init_from=source.out, max_steps=1)
    trainer = TextTrainer(target, set(), lambda message: None, False)
    trainer.prepare()
    trainer.run.unlock()
    trainer.close_logs()
    model, plain = trainer.model, LanguageModel.from_run_directory(source.out, weights="latest")
    wih = model.recurrent_stack.recurrent_layers[0].cell.kernel.numpy()[model.embedding_size :]
    assert np.all(wih == 0) and np.any(model.label_embedding.embeddings.numpy() != 0)
    tokens = np.array([plain.encode("xxxxx.y") for _ in range(3)])
    for label in range(3):
        joint = model.joint_ids(tokens, label)
        conditioned, _ = model.token_log_probs(joint, tokens, model.initial_states(3))
        reference, _ = plain.token_log_probs(tokens, tokens, plain.initial_states(3))
        np.testing.assert_allclose(conditioned.numpy(), reference.numpy(), atol=1e-5)


def test_a_stopped_conditioned_run_resumes_to_the_same_checkpoint(folder, tmp_path):
    straight = labelled_config(folder, tmp_path / "straight", max_steps=8)
    TextTrainer.train_run(straight, **QUIET)
    split = dataclasses.replace(straight, out=str(tmp_path / "split"), max_steps=4)
    TextTrainer.train_run(split, **QUIET)
    resumed = dataclasses.replace(split, max_steps=8, resume=True)
    TextTrainer.train_run(resumed, explicit={"max_steps"}, **QUIET)
    assert_same_checkpoint(straight.out, split.out)
    with open(os.path.join(split.out, "labels.json"), encoding="utf-8") as f:
        assert json.load(f) == [NO_LABEL, "ex", "why"]


# ---- the order of the training documents ----


def test_labelled_training_documents_are_shuffled_with_their_labels(folder, tmp_path):
    """--document-order auto shuffles a labelled corpus (the two label files would otherwise
    run one after the other), each label moving with its document; validation keeps order."""
    corpora = {}
    for order in ("corpus", "shuffled"):
        documents = {"document_boundary": "separator:%", "labels": "folder", "seed": 3}
        prepare_corpus(
            str(folder),
            tmp_path / order,
            PREPARE_OPTIONS,
            False,
            1,
            {**documents, "document_order": order},
        )
        corpora[order] = PreparedCorpus.open(tmp_path / order)
    plain, shuffled = corpora["corpus"], corpora["shuffled"]
    assert shuffled.documents["order"] == "shuffled" and plain.documents["order"] == "corpus"
    end = plain.vocabulary.id(END_OF_DOCUMENT)

    def documents(corpus, split):
        ids = np.asarray((corpus.train_ids, corpus.val_ids)[split])
        offsets = list(corpus.document_offsets[split]) + [len(ids)]
        names = np.array(corpus.label_names)[corpus.document_labels[split]]
        texts = [tuple(ids[a:b]) for a, b in zip(offsets, offsets[1:])]
        assert all(text[-1] == end for text in texts)
        return list(zip(texts, names))

    before, after = documents(plain, 0), documents(shuffled, 0)
    assert sorted(before) == sorted(after) and before != after
    labels = [name for _, name in before]
    assert labels == sorted(labels)  # one label's documents in a row, as the files hold them
    assert [name for _, name in after] != sorted(labels)
    assert documents(plain, 1) == documents(shuffled, 1)
    config = labelled_config(folder, tmp_path / "run")
    assert document_options(config)["document_order"] == "shuffled"
    unlabelled = dataclasses.replace(config, labels="")
    assert document_options(unlabelled)["document_order"] == "corpus"


@pytest.mark.parametrize("content", [None, "{}", '["<none>", "ex", "ex"]'])
def test_a_missing_or_damaged_labels_file_is_one_error_naming_it(trained, tmp_path, content):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("saved_model", "lock"))
    if content is None:
        (run / "labels.json").unlink()
    else:
        (run / "labels.json").write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match="labels.json") as error:
        LanguageModel.from_run_directory(str(run))
    assert "\n" not in str(error.value)


# ---- classify's prior ----


def test_the_run_keeps_each_labels_training_documents(trained, folder):
    """label_counts.json counts the training documents of each label: the held-out ones and
    the documents that label dropout trains as <none> are still their label's."""
    documents = labelled_documents(str(folder), boundary="separator:%")
    held = held_out_documents(len(documents), 0.1, TrainConfig().seed)
    expected = {name: 0 for name in DOCUMENTS}
    for (_, name), out in zip(documents, held):
        expected[name] += not out
    with open(os.path.join(trained, "label_counts.json"), encoding="utf-8") as f:
        assert json.load(f) == {"training_documents": expected}
    model = LanguageModel.from_run_directory(trained)
    assert model.label_counts == [expected["ex"], expected["why"]]
    smoothed = np.array([expected["ex"] + 1, expected["why"] + 1]) / (sum(expected.values()) + 2)
    np.testing.assert_allclose(model.label_log_prior(), np.log(smoothed))
    np.testing.assert_allclose(model.label_log_prior("uniform"), np.log([0.5, 0.5]))
    with pytest.raises(UsageError, match="`prior` must be training or uniform"):
        model.label_log_prior("flat")


def copy_of_run(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("saved_model", "lock"))
    return run


def test_classify_decides_by_bayes_rule_with_the_training_prior(trained, tmp_path, capsys):
    """A text that fits both labels alike (a lone full stop) goes to the label the training
    documents favour, and --prior uniform leaves it to the likelihood alone."""
    run = copy_of_run(trained, tmp_path)
    text = tmp_path / "ambiguous.txt"
    text.write_text(".", encoding="utf-8")

    def classify(counts, *flags):
        (run / "label_counts.json").write_text(
            json.dumps({"training_documents": counts}), encoding="utf-8"
        )
        status, out, err = run_main(
            score_cli.main, capsys, str(run), str(text), "--classify", "--json", *flags
        )
        assert status == 0, err
        return json.loads(out)

    # A prior of e^-20 against a likelihood ratio of a few nats at most.
    favour_ex = classify({"ex": 10**9, "why": 0})
    favour_why = classify({"ex": 0, "why": 10**9})
    assert favour_ex["label"] == "ex" and favour_why["label"] == "why"
    assert favour_ex["log_probs"] == favour_why["log_probs"]  # the likelihood is the same
    assert favour_ex["probability"] > 0.99 and favour_ex["runner_up"] == "why"
    assert favour_ex["probability"] + favour_ex["runner_up_probability"] == pytest.approx(1)
    uniform = classify({"ex": 10**9, "why": 0}, "--prior", "uniform")
    likelihood = uniform["log_probs"]
    assert uniform["label"] == max(likelihood, key=likelihood.get)
    assert uniform["log_prior"] == pytest.approx({"ex": np.log(0.5), "why": np.log(0.5)})


@pytest.mark.parametrize("content", ["[1, 2]", '{"training_documents": {"ex": 3}}'])
def test_a_damaged_label_counts_file_is_one_error_naming_it(trained, tmp_path, content):
    run = copy_of_run(trained, tmp_path)
    (run / "label_counts.json").write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match="label_counts.json") as error:
        LanguageModel.from_run_directory(str(run))
    assert "\n" not in str(error.value)


def test_a_run_without_label_counts_classifies_with_a_uniform_prior(trained, tmp_path):
    run = copy_of_run(trained, tmp_path)
    (run / "label_counts.json").unlink()
    model = LanguageModel.from_run_directory(str(run))
    assert model.label_counts is None
    np.testing.assert_allclose(model.label_log_prior(), np.log([0.5, 0.5]))
