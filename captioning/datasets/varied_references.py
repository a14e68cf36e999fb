"""Reference captions of a shapes scene written like COCO's: as if by different people.

`captioning.shapes --references varied` keeps the canonical caption first and asks this module
for the other four. Each is written independently (its own draws, no look at the others) by a
"writer" who names some of the objects (the largest and the one nearest the centre more often,
and first), in an order, with words and a sentence form of their own, and who now and then
writes a vague word ("a shape", "something red") or the wrong article ("an red square"). The
canonical wording's agreement is what CIDEr's consensus weighting and self-critical training
cannot use; these references disagree the way human ones do, while every one stays true.

What the words mean, so that a reference is true of its scene (tests/test_varied_references.py
checks each reference against the scene's coordinates with these meanings):
* "a [size] [colour] NOUN": an object of the scene with those attributes; NOUN is a shape word
  (SHAPE_WORDS) or a vague one ("shape", "object", "thing"); "something [colour]" likewise.
  Distinct phrases name distinct objects.
* "two|three|four [size] [colour] NOUNs": the scene holds exactly that many such objects.
* "N shapes:" before a list: the scene holds exactly N objects; "by itself": exactly one.
* "X left of / right of / above / below Y": along that axis the centres are at least half the
  sum of the two diameters apart (the bounding boxes do not overlap), and along the other axis
  at most half as far: the rule of the canonical relation (`two_object_relation`) without its
  gap. "X next to Y" (beside, near): the centres are at most the two diameters' sum apart.
* "from left to right: X, Y and Z" (or right to left): the centres in that order, each at least
  ORDER_MARGIN of the image side from the next.

Only the scene and the image side are read; the draws come from the caller's generator, so a
reference depends on nothing but (seed, split, index).
"""

# The first word of each tuple is the scene's own name, which the canonical caption uses.
SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid"),
}
COLOR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald"),
    "blue": ("blue", "cobalt"),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
    "orange": ("orange", "amber"),
}
SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "midsize"),
    "large": ("large", "big", "huge"),
}
VAGUE_NOUNS = ("shape", "object", "thing")
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
RELATION_WORDS = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside", "near"),
}
LIST_OPENINGS = ("", "", "", "there is ", "a picture of ", "an image of ", "i see ")
RELATION_OPENINGS = ("", "", "there is ", "a picture of ")
ALONE_ENDINGS = (" by itself", " on its own", " alone")

ORDER_MARGIN = 0.1  # of the image side: closer centres are not plainly in order
# Added to an object's weight of 1 for being the largest, and again for being the most central.
SALIENCE_BONUS = 3.0
MENTION_ALL = 0.45  # chance that a writer names every object of a scene with two or more
FIRST_WORD = 0.6  # chance of an attribute's or shape's first synonym; the rest share the remainder
SAY_SIZE, SAY_COLOR = 0.55, 0.85  # people name colour more readily than size
VAGUE = 0.25  # chance that a writer makes one of its phrases vague
ARTICLE_SLIP = 0.12  # chance that a writer gets one article wrong
ARTICLE = "<a>"  # placeholder, made "a" or "an" once the next word is known


def pick(rng, words):
    """The first synonym at FIRST_WORD, else one of the others: people agree on the plain word."""
    if len(words) == 1 or rng.random() < FIRST_WORD:
        return words[0]
    return words[1 + rng.integers(len(words) - 1)]


def plural(noun):
    return noun + "es" if noun.endswith("x") else noun + "s"


# ---------------------------------------------------------------------------------------------
# Geometry: the only source of relation words, so that each stated relation holds.


def relations(a, b):
    """The relation words true of "a R b" (see the module doc for their meaning)."""
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    reach = (a["diameter"] + b["diameter"]) / 2
    found = []
    if abs(dx) >= reach and abs(dy) <= abs(dx) / 2:
        found.append("left of" if dx > 0 else "right of")
    if abs(dy) >= reach and abs(dx) <= abs(dy) / 2:
        found.append("above" if dy > 0 else "below")  # image y grows downwards
    if (dx * dx + dy * dy) ** 0.5 <= a["diameter"] + b["diameter"]:
        found.append("next to")
    return found


def in_plain_order(objects, image_size):
    """Whether the objects' centres, sorted by x, are each ORDER_MARGIN apart."""
    xs = sorted(o["x"] for o in objects)
    return all(b - a >= ORDER_MARGIN * image_size for a, b in zip(xs, xs[1:]))


def salience(objects, image_size):
    """Weights for choosing whom to mention: the largest object and the one nearest the centre
    catch the eye, so writers name them more often, and first."""
    middle = image_size / 2
    largest = max(range(len(objects)), key=lambda i: objects[i]["diameter"])
    central = min(
        range(len(objects)),
        key=lambda i: (objects[i]["x"] - middle) ** 2 + (objects[i]["y"] - middle) ** 2,
    )
    return [
        1.0 + SALIENCE_BONUS * (i == largest) + SALIENCE_BONUS * (i == central)
        for i in range(len(objects))
    ]


def choose_mentioned(rng, objects, image_size):
    """Indices of the objects this writer names, most salient likeliest first."""
    n = len(objects)
    count = n if n == 1 or rng.random() < MENTION_ALL else int(rng.integers(1, n))
    weights = salience(objects, image_size)
    left, chosen = list(range(n)), []
    for _ in range(count):  # weighted draws without replacement
        total = sum(weights[i] for i in left)
        point, k = rng.random() * total, 0
        while point >= weights[left[k]] and k < len(left) - 1:
            point -= weights[left[k]]
            k += 1
        chosen.append(left.pop(k))
    return chosen


# ---------------------------------------------------------------------------------------------
# Phrases: lists of words, articles left as ARTICLE until the sentence is whole.


def object_words(rng, obj, vague=False, keep_attribute=False):
    """One object: "a big red box", or vague: "a shape", "a red object", "something red".
    `keep_attribute`: a vague phrase still names the colour or size (when it is all there is)."""
    size = pick(rng, SIZE_WORDS[obj["size"]])
    color = pick(rng, COLOR_WORDS[obj["color"]])
    if vague:
        forms = [["something", color], [ARTICLE, color, pick(rng, VAGUE_NOUNS)]]
        forms.append([ARTICLE, size, pick(rng, VAGUE_NOUNS)])
        if not keep_attribute:
            forms.append([ARTICLE, pick(rng, VAGUE_NOUNS)])
        return forms[rng.integers(len(forms))]
    words = [ARTICLE]
    if rng.random() < SAY_SIZE:
        words.append(size)
    if rng.random() < SAY_COLOR:
        words.append(color)
    return words + [pick(rng, SHAPE_WORDS[obj["shape"]])]


def count_words(rng, objects, group):
    """ "two red circles" for the objects `group` (indices, one shape), when some attributes pick
    out exactly them in the scene (a count names all the matches, or it is false); else None."""
    members = [objects[i] for i in group]
    shape = members[0]["shape"]
    options = []
    for keys in ((), ("color",), ("size",)):
        if any(m[k] != members[0][k] for m in members for k in keys):
            continue
        matches = [
            i
            for i, o in enumerate(objects)
            if o["shape"] == shape and all(o[k] == members[0][k] for k in keys)
        ]
        if sorted(matches) == sorted(group):
            options.append(keys)
    if not options:
        return None
    keys = options[rng.integers(len(options))]
    words = [COUNT_WORDS[len(group)]]
    if "size" in keys:
        words.append(pick(rng, SIZE_WORDS[members[0]["size"]]))
    if "color" in keys:
        words.append(pick(rng, COLOR_WORDS[members[0]["color"]]))
    return words + [plural(pick(rng, SHAPE_WORDS[shape]))]


def joined(phrases):
    """["x"], ["x", "and", "y"], ["x", ",", "y", "and", "z"] as one word list."""
    words = list(phrases[0])
    for k, phrase in enumerate(phrases[1:], start=1):
        words += (["and"] if k == len(phrases) - 1 else [","]) + list(phrase)
    return words


def finish(words, rng, slip):
    """The sentence: each ARTICLE made "a" or "an" by the next word's sound (roughly: its first
    letter), one of them wrong when the writer `slip`s."""
    articles = [k for k, w in enumerate(words) if w == ARTICLE]
    wrong = articles[rng.integers(len(articles))] if slip and articles else None
    out = []
    for k, word in enumerate(words):
        if word == ARTICLE:
            vowel = words[k + 1][0] in "aeiou"
            word = "an" if vowel != (k == wrong) else "a"
        out.append(word)
    return " ".join(out).replace(" ,", ",").replace(" :", ":")


# ---------------------------------------------------------------------------------------------
# One writer


def write_reference(rng, scene, image_size):
    """One reference: who is named, how, in which sentence form (see the module doc)."""
    objects = scene["objects"]
    mentioned = choose_mentioned(rng, objects, image_size)
    slip = rng.random() < ARTICLE_SLIP
    vague_at = int(rng.integers(len(mentioned))) if rng.random() < VAGUE else None

    def phrase(k):
        return object_words(
            rng, objects[mentioned[k]], vague=k == vague_at, keep_attribute=len(mentioned) == 1
        )

    named = [objects[i] for i in mentioned]
    if len(named) == 2 and relations(*named) and rng.random() < 0.55:
        if rng.random() < 0.5:  # either object may come first: "X left of Y" or "Y right of X"
            mentioned.reverse()
            named.reverse()
        stated = relations(*named)
        relation = stated[rng.integers(len(stated))]
        words = phrase(0) + (["is"] if rng.random() < 0.35 else [])
        words += pick(rng, RELATION_WORDS[relation]).split() + phrase(1)
        opening = RELATION_OPENINGS[rng.integers(len(RELATION_OPENINGS))].split()
        return finish(opening + words, rng, slip)

    if len(mentioned) >= 2 and in_plain_order(named, image_size) and rng.random() < 0.35:
        mentioned.sort(key=lambda i: objects[i]["x"])
        if rng.random() < 0.3:
            mentioned.reverse()
            order = ["right", "to", "left"]
        else:
            order = ["left", "to", "right"]
        listed = joined([phrase(k) for k in range(len(mentioned))])
        if rng.random() < 0.5:
            return finish(["from"] + order + [":"] + listed, rng, slip)
        return finish(listed + ["from"] + order, rng, slip)

    # A list, objects of one shape counted together when a count picks out exactly them.
    # Decided once per shape, at its first mention: a count covers the whole group or nothing.
    phrases, counted_shapes, seen_shapes = [], set(), set()
    for k, i in enumerate(mentioned):
        shape = objects[i]["shape"]
        if shape in counted_shapes:
            continue
        if shape not in seen_shapes:
            seen_shapes.add(shape)
            group = [j for j in mentioned if objects[j]["shape"] == shape]
            counted = count_words(rng, objects, group) if len(group) >= 2 else None
            if counted is not None and rng.random() < 0.8:
                phrases.append(counted)
                counted_shapes.add(shape)
                continue
        phrases.append(phrase(k))
    words = joined(phrases)
    if len(objects) == 1 and rng.random() < 0.25:
        words += ALONE_ENDINGS[rng.integers(len(ALONE_ENDINGS))].split()
    if len(mentioned) == len(objects) >= 2 and rng.random() < 0.25:
        total = [COUNT_WORDS[len(objects)], pick(rng, ("shapes", "objects")), ":"]
        return finish(total + words, rng, slip)
    opening = LIST_OPENINGS[rng.integers(len(LIST_OPENINGS))].split()
    return finish(opening + words, rng, slip)


def varied_references(scene, rng, image_size, count=4, avoid=()):
    """`count` references by different writers, none equal to another or to one in `avoid`
    (the canonical caption). Only `rng` is drawn from."""
    references = []
    for _ in range(count):
        for _attempt in range(20):  # a one-object scene leaves writers few choices
            reference = write_reference(rng, scene, image_size)
            if reference not in references and reference not in avoid:
                break
        references.append(reference)
    return references
