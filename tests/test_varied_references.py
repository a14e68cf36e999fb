"""`python -m captioning.shapes --references varied`: references that disagree the way COCO's five
annotators do, and still say only what is true of the scene; the default data stays byte for byte.

The truth check parses each reference with its own grammar (articles, counts, attribute and
shape words, relation and order words) and the word meanings the generator documents, and looks
for objects of the scene that make every statement hold; it uses the generator's synonym tables
only to map words back to attributes.
"""

import hashlib
import itertools
import json
import math

import pytest

from captioning import shapes
from captioning.datasets import varied_references
from captioning.datasets.tokens import tokenize
from captioning.metrics.scene_parser import caption_is_correct
from helpers import one_error_line, run_main

IMAGE_SIZE = 64


def inverted(table):
    return {word: name for name, words in table.items() for word in words}


SHAPE = inverted(varied_references.SHAPE_WORDS)
COLOR = inverted(varied_references.COLOR_WORDS)
SIZE = inverted(varied_references.SIZE_WORDS)
PLURAL = {
    "circles": "circle",
    "discs": "circle",
    "balls": "circle",
    "squares": "square",
    "boxes": "square",
    "blocks": "square",
    "triangles": "triangle",
    "pyramids": "triangle",
}
VAGUE = {"shape", "object", "thing"}
NUMBER = {"two": 2, "three": 3, "four": 4}
RELATION = {
    "left": "left of",
    "right": "right of",
    "above": "above",
    "over": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
    "next": "next to",
    "beside": "next to",
    "near": "next to",
}
ALONE = {"itself", "alone", "own"}
FILLER = {"a", "an", "there", "is", "picture", "image", "of", "i", "see", "and", ",", ":"}
FILLER |= {"to", "the", "on", "from", "by", "its"}


# ---------------------------------------------------------------------------------------------
# Reading a reference


def parse(caption):
    """{"phrases": [{"count", "shape", "color", "size"}], "relations": [(i, relation, j)],
    "order": None/"left"/"right", "total": None/N, "alone": bool}; raises AssertionError on
    anything it cannot read, unknown words included."""
    tokens = tokenize(caption)
    parsed = {"phrases": [], "relations": [], "order": None, "total": None, "alone": False}
    pending, i = None, 0
    while i < len(tokens):
        token, following = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else None
        if tokens[i : i + 3] in (["left", "to", "right"], ["right", "to", "left"]):
            assert parsed["order"] is None, caption
            parsed["order"], i = token, i + 3
        elif token in NUMBER and following in ("shapes", "objects"):  # "three shapes: ..."
            parsed["total"], i = NUMBER[token], i + 2
        elif (
            token in NUMBER
            or token == "something"
            or (token in ("a", "an") and following not in ("picture", "image"))
        ):
            phrase = {"count": NUMBER.get(token, 1), "shape": None, "color": None, "size": None}
            i += 1
            while i < len(tokens) and (tokens[i] in SIZE or tokens[i] in COLOR):
                key, table = ("size", SIZE) if tokens[i] in SIZE else ("color", COLOR)
                assert phrase[key] is None, caption
                phrase[key], i = table[tokens[i]], i + 1
            noun = tokens[i] if i < len(tokens) else None
            if token == "something":
                assert phrase["color"] or phrase["size"], caption
            elif phrase["count"] > 1:
                assert noun in PLURAL, caption
                phrase["shape"], i = PLURAL[noun], i + 1
            else:
                assert noun in SHAPE or noun in VAGUE, caption
                phrase["shape"], i = SHAPE.get(noun), i + 1
            parsed["phrases"].append(phrase)
            if pending:  # "X <relation> Y": the phrases before and after the relation words
                last = len(parsed["phrases"]) - 1
                parsed["relations"].append((last - 1, pending, last))
                pending = None
        elif token in RELATION:
            assert pending is None and parsed["phrases"], caption
            pending, i = RELATION[token], i + 1
        else:
            assert token in FILLER or token in ALONE, (token, caption)
            parsed["alone"] |= token in ALONE
            i += 1
    assert pending is None and parsed["phrases"], caption
    return parsed


def fits(phrase, obj):
    return all(phrase[k] in (None, obj[k]) for k in ("shape", "color", "size"))


def relation_holds(a, relation, b):
    """The documented meanings, from the centres and diameters."""
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    reach = (a["diameter"] + b["diameter"]) / 2
    if relation == "left of":
        return dx >= reach and abs(dy) <= dx / 2
    if relation == "right of":
        return -dx >= reach and abs(dy) <= -dx / 2
    if relation == "above":  # image y grows downwards
        return dy >= reach and abs(dx) <= dy / 2
    if relation == "below":
        return -dy >= reach and abs(dx) <= -dy / 2
    assert relation == "next to"
    return math.hypot(dx, dy) <= a["diameter"] + b["diameter"]


def assignments(parsed, scene):
    """Every way of giving each singular phrase its own object of the scene such that every
    statement of the reference holds ([] when the reference is false)."""
    objects = scene["objects"]
    if parsed["total"] not in (None, len(objects)) or (parsed["alone"] and len(objects) != 1):
        return []
    reserved = set()
    for phrase in parsed["phrases"]:
        if phrase["count"] > 1:  # a count names all the matching objects
            matches = {i for i, o in enumerate(objects) if fits(phrase, o)}
            if len(matches) != phrase["count"] or matches & reserved:
                return []
            reserved |= matches
    singles = [k for k, p in enumerate(parsed["phrases"]) if p["count"] == 1]
    if parsed["order"] or parsed["relations"]:
        assert len(singles) == len(parsed["phrases"]), parsed  # counts stand alone
    free = [i for i in range(len(objects)) if i not in reserved]
    found = []
    for chosen in itertools.permutations(free, len(singles)):
        of = dict(zip(singles, chosen))
        if not all(fits(parsed["phrases"][k], objects[of[k]]) for k in singles):
            continue
        if not all(
            relation_holds(objects[of[i]], r, objects[of[j]]) for i, r, j in parsed["relations"]
        ):
            continue
        if parsed["order"]:
            xs = [objects[of[k]]["x"] for k in singles]
            if parsed["order"] == "right":
                xs = xs[::-1]
            if not all(b - a >= 0.1 * IMAGE_SIZE for a, b in zip(xs, xs[1:])):
                continue
        found.append(set(chosen) | reserved)
    return found


def article_error(caption):
    words = caption.replace(",", " ").split()
    return any(
        (a == "a" and w[0] in "aeiou") or (a == "an" and w[0] not in "aeiou")
        for a, w in zip(words, words[1:])
        if a in ("a", "an")
    )


# ---------------------------------------------------------------------------------------------
# The default data set does not move


# SHA-256 digests recorded from the generator before --references existed.
ANNOTATIONS_SHA256 = {
    3: "ff4b84df5e3c9006e07bfa584c51eb574b1eeedd445f903a93dbac3a5b8d3048",
    4: "83bed65a4a797107c0dc0701ce842fb8278b4685e62c7d943c5a6974bfdb2efb",
}
EXAMPLES_SHA256 = {
    3: "b253d4220c146a5bc4e22757c1a9ac40d65a2dab305bcd6166a12d97de2c1b6d",
    4: "174697a4b830219a6a3d73ad17683221cc5d9d2b97046ec06a1a95643ec0dfb7",
}


@pytest.mark.parametrize("max_objects", [3, 4])
def test_canonical_references_are_unchanged(tmp_path, max_objects):
    config = shapes.ShapesConfig(
        out=str(tmp_path), train_size=12, val_size=4, seed=7, max_objects=max_objects
    )
    assert config.references == "canonical"
    paths = shapes.generate(config)
    digest = hashlib.sha256()
    for split in ("train", "val"):
        with open(paths[split], "rb") as f:
            digest.update(f.read())
    assert digest.hexdigest() == ANNOTATIONS_SHA256[max_objects]

    digest = hashlib.sha256()  # pixels too, without PNG's zlib in between
    for split in ("train", "val"):
        for index in range(10):
            pixels, scene, captions = shapes.generate_example(0, split, index, 64, max_objects)
            digest.update(json.dumps([scene, captions], sort_keys=True).encode())
            digest.update(pixels.tobytes())
    assert digest.hexdigest() == EXAMPLES_SHA256[max_objects]


def test_varied_keeps_the_images_scenes_and_canonical_first_reference():
    for index in range(20):
        canonical = shapes.generate_example(2, "val", index, 64, 4)
        varied = shapes.generate_example(2, "val", index, 64, 4, "varied")
        assert (canonical[0] == varied[0]).all() and canonical[1] == varied[1]
        assert varied[2][0] == canonical[2][0] and caption_is_correct(varied[2][0], varied[1])
        assert len(varied[2]) == 5 and len(set(varied[2])) == 5


def test_varied_is_deterministic_for_a_seed():
    def captions(seed):
        return [shapes.generate_example(seed, "train", i, 64, 4, "varied")[2] for i in range(30)]

    assert captions(5) == captions(5)
    other = captions(6)
    assert sum(a != b for a, b in zip(captions(5), other)) >= 28


# ---------------------------------------------------------------------------------------------
# What varies, and that it stays true


def varied_examples(count=300, seed=9, max_objects=4):
    return [
        shapes.generate_example(seed, "train", i, IMAGE_SIZE, max_objects, "varied")[1:]
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def examples():
    return varied_examples() + varied_examples(100, seed=4, max_objects=3)


def test_every_varied_reference_is_true_of_its_scene(examples):
    for scene, captions in examples:
        for caption in captions[1:]:
            assert assignments(parse(caption), scene), (caption, scene)
            assert len(tokenize(caption)) <= 24, caption  # the default --max-length


def test_the_checker_catches_false_references(examples):
    """Swapping a relation or an order, miscounting or naming a missing colour is caught."""
    caught = 0
    for scene, captions in examples:
        for caption in captions[1:]:
            words = tokenize(caption)
            # Swapped relations are false only when each phrase can name just one object.
            plain = all(
                p["count"] > 1 or sum(fits(p, o) for o in scene["objects"]) == 1
                for p in parse(caption)["phrases"]
            )
            for swap in ({"left": "right", "right": "left"}, {"above": "below"}, {"two": "three"}):
                if swap.keys() & set(words) and (plain or "two" in swap):
                    wrong = " ".join(swap.get(w, w) for w in words)  # "right to left" too
                    assert not assignments(parse(wrong), scene), (wrong, scene)
                    caught += 1
            colors = {o["color"] for o in scene["objects"]}
            missing = next(c for c in varied_references.COLOR_WORDS if c not in colors)
            wrong = caption.replace(" a ", f" a {missing} ", 1) if " a " in caption else None
            if wrong and "something" not in caption and not COLOR.keys() & set(words):
                assert not assignments(parse(wrong), scene), (wrong, scene)
                caught += 1
    assert caught > 200


def test_references_disagree_like_human_ones(examples):
    stats = measure(examples)
    assert stats["distinct_lengths"] >= 3.5  # of 5 references per scene
    assert stats["distinct_token_sets"] >= 4.8
    assert 0.3 <= stats["omit_some_object"] <= 0.75  # scenes of 2+ objects
    assert stats["synonym"] >= 0.3  # references with a word other than the plain one
    assert stats["unused_synonyms"] == []
    assert stats["count_when_shapes_repeat"] >= 0.5  # scenes: some reference says "two ..."
    assert 0.03 <= stats["article_error"] <= 0.25
    assert 0.1 <= stats["vague"] <= 0.4
    assert stats["relation"] >= 0.07 and stats["relation_kinds"] == 5
    assert stats["order"] >= 0.08
    assert stats["mentioned_largest"] >= stats["mentioned_other"] + 0.25
    assert stats["mentioned_central"] >= stats["mentioned_other"] + 0.2


def measure(examples):
    """The statistics of test_references_disagree_like_human_ones, over references 1-4 (the
    varied ones) unless said otherwise."""
    lengths, token_sets, omit, repeat_counted, relation_kinds = [], [], [], [], set()
    mentioned = {"largest": [], "central": [], "other": []}
    words_used, references = set(), []
    for scene, captions in examples:
        objects = scene["objects"]
        lengths.append(len({len(tokenize(c)) for c in captions}))
        token_sets.append(len({frozenset(tokenize(c)) for c in captions}))
        shapes_seen = [o["shape"] for o in objects]
        if len(set(shapes_seen)) < len(shapes_seen):
            repeat_counted.append(any(NUMBER.keys() & set(tokenize(c)) for c in captions[1:]))
        middle = IMAGE_SIZE / 2
        largest = max(range(len(objects)), key=lambda i: objects[i]["diameter"])
        central = min(
            range(len(objects)),
            key=lambda i: math.hypot(objects[i]["x"] - middle, objects[i]["y"] - middle),
        )
        for caption in captions[1:]:
            parsed = parse(caption)
            references.append(parsed | {"caption": caption})
            words_used |= set(tokenize(caption))
            relation_kinds |= {r for _, r, _ in parsed["relations"]}
            if len(objects) >= 2:
                omit.append(sum(p["count"] for p in parsed["phrases"]) < len(objects))
            if len(objects) >= 2 and omit[-1]:  # who is left out, when someone is
                surely = set.intersection(*assignments(parsed, scene))  # named in every reading
                for i in range(len(objects)):
                    role = "largest" if i == largest else "central" if i == central else "other"
                    mentioned[role].append(i in surely)
    plain = {
        words[0]
        for table in (
            varied_references.SHAPE_WORDS,
            varied_references.COLOR_WORDS,
            varied_references.SIZE_WORDS,
        )
        for words in table.values()
    }
    others = (set(SHAPE) | set(COLOR) | set(SIZE)) - plain

    def share(values):
        return sum(values) / len(values)

    return {
        "distinct_lengths": share(lengths),
        "distinct_token_sets": share(token_sets),
        "omit_some_object": share(omit),
        "synonym": share([bool(others & set(tokenize(r["caption"]))) for r in references]),
        "unused_synonyms": sorted(others - words_used),
        "count_when_shapes_repeat": share(repeat_counted),
        "article_error": share([article_error(r["caption"]) for r in references]),
        "vague": share(
            [any(p["count"] == 1 and p["shape"] is None for p in r["phrases"]) for r in references]
        ),
        "relation": share([bool(r["relations"]) for r in references]),
        "relation_kinds": len(relation_kinds),
        "order": share([r["order"] is not None for r in references]),
        **{f"mentioned_{role}": share(values) for role, values in mentioned.items()},
    }


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_writes_varied_references(tmp_path, capsys):
    out = tmp_path / "data"
    argv = ["--references", "varied", "--train-size", 3, "--val-size", 2, "--out", out]
    status, _, err = run_main(shapes.main, capsys, *argv)
    assert status == 0, err
    for split, count in (("train", 3), ("val", 2)):
        document = json.loads((out / "annotations" / f"captions_{split}.json").read_text())
        assert document["info"]["references"] == "varied"
        assert len(document["images"]) == count and len(document["annotations"]) == 5 * count
        for image in document["images"]:
            captions = [
                a["caption"] for a in document["annotations"] if a["image_id"] == image["id"]
            ]
            assert len(captions) == 5 and caption_is_correct(captions[0], image["scene"])
            for caption in captions[1:]:
                assert assignments(parse(caption), image["scene"]), caption


def test_cli_refuses_an_unknown_reference_style(tmp_path, capsys):
    out = tmp_path / "data"
    status, _, err = run_main(shapes.main, capsys, "--references", "bogus", "--out", out)
    one_error_line(status, err, "--references", "canonical or varied", "bogus")
    assert not out.exists()
