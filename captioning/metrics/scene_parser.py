"""Grading a caption against a shapes scene: does it name every object and the relation correctly?

`caption_is_correct(caption, scene)` accepts every wording `captioning.shapes` produces and a
superset of it:

* an object is a run of attribute words ending in a shape noun, e.g. "a big red circle": exactly
  one size word (small/little/tiny or large/big/huge) and one colour, in any order; articles and
  other filler words ("there is", "then", "a picture of", ",") are ignored. An attribute word that
  is not part of such a run ("a red circle that is big") makes the caption incorrect.
* 1 object: the caption names exactly that object and no direction word.
* 2 objects: "X <relation> Y" with a relation between the two objects (left of, to the left of,
  right of, above, over, on top of, below, under, beneath, ...), or "X on the left and Y on the
  right" / "X at the top and Y at the bottom" (either order). Words after Y, if any, must agree.
* 3 or 4 objects: the objects in order plus exactly one "left to right" or "right to left"
  (before or after them, "from" optional); no other direction word. Two objects side by side
  may be described this way too ("X and Y from left to right").

The scene format is the one `captioning.shapes` stores (see its module docstring).
"""

from captioning.datasets.tokens import tokenize

SIZE_WORDS = {
    "small": "small",
    "little": "small",
    "tiny": "small",
    "medium": "medium",
    "midsize": "medium",
    "large": "large",
    "big": "large",
    "huge": "large",
}
COLOR_WORDS = {
    "red": "red",
    "green": "green",
    "blue": "blue",
    "yellow": "yellow",
    "purple": "purple",
    "violet": "purple",
    "orange": "orange",
}
SHAPE_WORDS = {
    "circle": "circle",
    "disc": "circle",
    "disk": "circle",
    "square": "square",
    "triangle": "triangle",
}

# Direction words between (or after) two objects, as "the first object is <direction> the second".
DIRECTION_WORDS = {
    "left": "left",
    "right": "right",
    "above": "above",
    "over": "above",
    "top": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
    "underneath": "below",
    "bottom": "below",
}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def parse_objects(tokens):
    """Splits tokens into object phrases and the filler between them.

    Returns (objects, fillers) with objects a list of {"shape", "color", "size"} (a missing
    attribute is None) and fillers the len(objects) + 1 token lists around them, or None when an
    attribute word dangles or an object names an attribute twice.
    """
    objects, fillers = [], [[]]
    pending = {}  # attributes read since the last shape noun
    for token in tokens:
        if token in SIZE_WORDS or token in COLOR_WORDS:
            key, value = (
                ("size", SIZE_WORDS[token])
                if token in SIZE_WORDS
                else ("color", COLOR_WORDS[token])
            )
            if key in pending:
                return None  # "a small big circle", or two objects run together
            pending[key] = value
        elif token in SHAPE_WORDS:
            objects.append(
                {
                    "shape": SHAPE_WORDS[token],
                    "color": pending.get("color"),
                    "size": pending.get("size"),
                }
            )
            pending = {}
            fillers.append([])
        else:
            if pending:
                return None  # attribute words not followed by a shape: "a red <unk> circle"
            fillers[-1].append(token)
    if pending:
        return None
    return objects, fillers


def directions(tokens):
    return [DIRECTION_WORDS[t] for t in tokens if t in DIRECTION_WORDS]


def remove_order_phrases(tokens):
    """(tokens without "left to right" / "right to left", the orders found, in order)."""
    kept, orders, i = [], [], 0
    while i < len(tokens):
        window = tokens[i : i + 3]
        if window in (["left", "to", "right"], ["right", "to", "left"]):
            orders.append(window[0])
            i += 3
        else:
            kept.append(tokens[i])
            i += 1
    return kept, orders


def same_kind(parsed, truth):
    return all(parsed[key] == truth[key] for key in ("shape", "color", "size"))


def caption_is_correct(caption, scene):
    """Whether `caption` (a string, or a list of tokens as `captioning.datasets.tokens.tokenize`
    gives)
    names every object of `scene` with the right size, colour and shape and states their
    relation correctly. Anything unparseable is simply incorrect."""
    tokens = tokenize(caption) if isinstance(caption, str) else [str(t).lower() for t in caption]
    truth = scene["objects"]
    relation = scene.get("relation")
    orders = []
    if len(truth) >= 2:
        tokens, orders = remove_order_phrases(tokens)
        if len(truth) >= 3 and len(orders) != 1:
            return False
    parsed = parse_objects(tokens)
    if parsed is None:
        return False
    objects, fillers = parsed
    if len(objects) != len(truth):
        return False

    if len(truth) == 1:
        return not directions(tokens) and same_kind(objects[0], truth[0])

    if len(truth) >= 3:
        if directions(tokens) or relation != "left to right":
            return False
        if orders[0] == "right":
            objects = objects[::-1]
        return all(same_kind(p, t) for p, t in zip(objects, truth))

    if len(truth) == 2 and orders:  # "X and Y from left to right"
        if len(orders) != 1 or directions(tokens) or relation != "left of":
            return False
        first, second = objects if orders[0] == "left" else objects[::-1]
        return same_kind(first, truth[0]) and same_kind(second, truth[1])

    if len(truth) == 2:
        before, between, after = fillers
        if directions(before):
            return False
        stated = set(directions(between))
        if len(stated) != 1:
            return False
        direction = stated.pop()
        trailing = set(directions(after))
        if trailing and trailing != {OPPOSITE[direction]}:
            return False
        first, second = objects
        if direction in ("right", "below"):  # "Y right of X" is "X left of Y"
            first, second, direction = second, first, OPPOSITE[direction]
        expected = {"left": "left of", "above": "above"}[direction]
        return expected == relation and same_kind(first, truth[0]) and same_kind(second, truth[1])

    return False
