"""captioning.metrics.cider_d.CiderD against pycocoevalcap's CiderScorer (CIDEr-D: clipping and the
Gaussian length penalty), with the same whitespace tokens and the same document frequencies."""

import numpy as np
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer

from captioning import shapes
from captioning.metrics.cider_d import CiderD, pad


def shapes_references(count, seed=1, max_objects=3):
    references = []
    for i in range(count):
        _, _, captions = shapes.generate_example(seed, "train", i, 64, max_objects)
        references.append([c.replace(",", " ,").replace(":", " :") for c in captions])
    return references


def hypotheses(references, rng):
    """Captions of every kind: a reference, another image's, cut short, with unseen words,
    shuffled, and the empty one."""
    out = []
    for captions in references:
        kind = rng.integers(5)
        words = captions[rng.integers(5)].split()
        if kind == 0:
            out.append(captions[0])
        elif kind == 1:
            out.append(references[rng.integers(len(references))][rng.integers(5)])
        elif kind == 2:
            cut = words[: rng.integers(len(words) + 1)]
            out.append(" ".join(cut + ["zebra", "quokka"][: rng.integers(3)]))
        elif kind == 3:
            out.append(" ".join(rng.permutation(words)))
        else:
            out.append(" ".join(words + words[:3]))
    out[0] = ""
    return out


def pycocoevalcap_scores(captions, references, document_frequency=None):
    scorer = CiderScorer(n=4, sigma=6.0)
    for caption, refs in zip(captions, references, strict=True):
        scorer += (caption, refs)
    if document_frequency is None:
        return scorer.compute_score()[1]
    scorer.document_frequency = document_frequency  # the training references' df
    return np.array(scorer.compute_cider())


@pytest.mark.parametrize("max_objects", [3, 4])
def test_equals_pycocoevalcap_with_the_evaluated_references_as_corpus(max_objects):
    references = shapes_references(300, max_objects=max_objects)
    captions = hypotheses(references, np.random.default_rng(max_objects))
    expected = pycocoevalcap_scores(captions, references)
    scorer = CiderD([[r.split() for r in refs] for refs in references])
    got = scorer.score_text(captions, np.arange(len(references)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert expected.std() > 0.5 and (expected == 0).any()  # the cases differ


def test_document_frequencies_of_the_training_references_several_captions_per_image():
    references = shapes_references(200, seed=2)
    scorer = CiderD([[r.split() for r in refs] for refs in references])
    df = CiderScorer(n=4)
    for refs in references:
        df += (None, refs)
    df.compute_doc_freq()
    rng = np.random.default_rng(7)
    for _ in range(3):  # three captions per image (what SCST samples), scored as one batch
        captions = hypotheses(references, rng)
        expected = pycocoevalcap_scores(captions, references, df.document_frequency)
        got = scorer.score_text(captions, np.arange(len(references)))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # A batch in any order, images repeated: each caption is scored against its own image.
    images = rng.integers(len(references), size=300)
    captions = [references[i][rng.integers(5)] for i in images]
    batch = scorer.score_text(captions, images)
    one_by_one = [scorer.score_text([c], [i])[0] for c, i in zip(captions, images)]
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-12)


def test_token_ids_beyond_each_length_are_ignored():
    references = [[[1, 2, 3, 4], [1, 2, 5]], [[6, 7], [6, 7, 8, 9, 10]]]
    scorer = CiderD(references)
    tokens, lengths = pad([[1, 2, 3, 4], [6, 7, 8], [1, 2, 5]])
    padded = np.concatenate([tokens, np.full((3, 4), 9)], axis=1)  # junk after each caption
    np.testing.assert_array_equal(
        scorer.score(padded, lengths, [0, 1, 0]), scorer.score(tokens, lengths, [0, 1, 0])
    )
    assert (
        scorer.score(tokens, lengths, [1, 0, 1]).max()
        < scorer.score(tokens, lengths, [0, 1, 0]).min()
    )
