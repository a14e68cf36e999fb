"""Tokenisers: text <-> tokens for char-level and word-level models.

Every tokeniser has `tokenize(text) -> list[str]` and `detokenize(tokens) -> str`, and
`chunk_end(text)`: where a chunk of a longer text may be cut so that tokenising the pieces one by
one gives the tokens of the whole (what a corpus larger than memory is prepared with); 0 when it
cannot be cut.

The `regex` and `whitespace` word tokenisers are written as a few regular-expression rewrites
that mean the same in Python's `re` and in RE2, so an exported SavedModel can tokenise its prompt
in-graph (`tf.strings.regex_replace`) exactly as training did (`tokenize_tf`, `detokenize_tf`).
"""

import re
import unicodedata

from textgen.errors import UsageError

NEWLINE = "\n"

# Punctuation that is a token of its own: anything that is not a letter, digit, underscore,
# white space, apostrophe or hyphen. Apostrophes stay inside words ("I'll", "'tis", "o'") and
# single hyphens inside compounds ("store-house"); runs of hyphens are dashes.
_PUNCT_PY = r"([^\w\s'\-])"
_PUNCT_RE2 = r"([^\pL\pN_\s'\-])"
_DASH = r"(--+)"
# Detokenising: no space before closing punctuation or after opening brackets, none around a
# newline or a dash.
_NO_SPACE_BEFORE = r" ([,.;:!?)\]}%])"
_NO_SPACE_AFTER = r"([(\[{]) "
_AROUND_NEWLINE = r" ?\n ?"
_AROUND_DASH = r" ?(--+) ?"
# Compiled once, and rewritten by a function rather than a template: re expands a template such
# as r" \1 " at every match, which made tokenising 2.5x slower.
_PUNCT_COMPILED = re.compile(_PUNCT_PY)
_DASH_COMPILED = re.compile(_DASH)
_SPACES = re.compile(r"[^\S\n]+")


def _spaced(match):
    return " " + match.group() + " "


def _after_last(text, separators):
    """The position after the last of `separators` in `text` (tried in order), or 0 when there
    is none."""
    for separator in separators:
        cut = text.rfind(separator)
        if cut >= 0:
            return cut + 1
    return 0


class CharTokenizer:
    """Characters are Unicode code points: Chinese, accents and emoji are one token each."""

    name = "char"
    joiner = ""

    def tokenize(self, text):
        return list(text)

    def detokenize(self, tokens):
        return "".join(tokens)

    def chunk_end(self, text):
        return len(text)


class RegexTokenizer:
    """Words, numbers and each punctuation mark are tokens; a newline is a token of its own."""

    name = "regex"

    def tokenize(self, text):
        text = _PUNCT_COMPILED.sub(_spaced, text)
        return WhitespaceTokenizer().tokenize(_DASH_COMPILED.sub(_spaced, text))

    def chunk_end(self, text):
        """Tokens never span white space (punctuation and dashes are cut off at spaces too)."""
        return _after_last(text, (NEWLINE, " "))

    def detokenize(self, tokens):
        text = WhitespaceTokenizer().detokenize(tokens)
        text = re.sub(_NO_SPACE_BEFORE, r"\1", text)
        text = re.sub(_NO_SPACE_AFTER, r"\1", text)
        return re.sub(_AROUND_DASH, r"\1", text)

    @staticmethod
    def tokenize_tf(text):
        """The same rewrites in RE2, on a tf.string scalar; returns a 1-D tf.string tensor."""
        import tensorflow as tf

        text = tf.strings.regex_replace(text, _PUNCT_RE2, r" \1 ")
        return WhitespaceTokenizer.tokenize_tf(tf.strings.regex_replace(text, _DASH, r" \1 "))

    @staticmethod
    def detokenize_tf(tokens):
        import tensorflow as tf

        text = WhitespaceTokenizer.detokenize_tf(tokens)
        text = tf.strings.regex_replace(text, _NO_SPACE_BEFORE, r"\1")
        text = tf.strings.regex_replace(text, _NO_SPACE_AFTER, r"\1")
        return tf.strings.regex_replace(text, _AROUND_DASH, r"\1")


class WhitespaceTokenizer:
    """Splits on spaces only; a newline is a token of its own."""

    name = "whitespace"

    def tokenize(self, text):
        return [t for t in _SPACES.split(text.replace(NEWLINE, " \n ")) if t]

    def chunk_end(self, text):
        return _after_last(text, (NEWLINE, " "))

    def detokenize(self, tokens):
        return re.sub(_AROUND_NEWLINE, "\n", " ".join(tokens))

    @staticmethod
    def tokenize_tf(text):
        import tensorflow as tf

        text = tf.strings.regex_replace(text, "\n", " \n ")
        text = tf.strings.regex_replace(text, r"[ \t\r\f\v]+", " ")
        tokens = tf.strings.split(tf.strings.strip(text), sep=" ")
        return tf.boolean_mask(tokens, tf.strings.length(tokens) > 0)

    @staticmethod
    def detokenize_tf(tokens):
        import tensorflow as tf

        text = tf.strings.reduce_join(tokens, separator=" ", axis=-1)
        return tf.strings.regex_replace(text, _AROUND_NEWLINE, "\n")


class JiebaTokenizer:
    """Chinese word segmentation with jieba; tokens are joined back without spaces.

    jieba cannot run inside a TensorFlow graph, so an exported SavedModel takes its prompt
    already segmented, words separated by spaces (`tokenize_tf`), and returns text joined
    without spaces (`detokenize_tf`).
    """

    name = "jieba"

    def __init__(self):
        try:
            import jieba
        except ImportError:
            raise UsageError(
                "`segmenter` jieba needs jieba: pip install jieba "
                "(or pip install '.[zh]' in this project)"
            ) from None
        jieba.setLogLevel(60)  # its "Building prefix dict" chatter goes to stderr otherwise
        self._jieba = jieba

    def tokenize(self, text):
        tokens = []
        for i, line in enumerate(text.split(NEWLINE)):
            if i:
                tokens.append(NEWLINE)
            tokens.extend(t for t in self._jieba.lcut(line, HMM=True) if t)
        return tokens

    def detokenize(self, tokens):
        return "".join(tokens)

    def chunk_end(self, text):
        """Lines are segmented one by one; within one, jieba's result depends on its context."""
        return _after_last(text, (NEWLINE,))

    tokenize_tf = staticmethod(WhitespaceTokenizer.tokenize_tf)

    @staticmethod
    def detokenize_tf(tokens):
        import tensorflow as tf

        return tf.strings.reduce_join(tokens, separator="", axis=-1)


SEGMENTERS = ("auto", "regex", "jieba", "whitespace")


def looks_chinese(text, sample=20000):
    """True when most letters of the text's start are CJK ideographs."""
    letters = [c for c in text[:sample] if c.isalpha()]
    cjk = sum(1 for c in letters if "CJK" in unicodedata.name(c, ""))
    return bool(letters) and cjk / len(letters) > 0.5


def make_tokenizer(level="char", segmenter="auto", text=None):
    """The tokeniser for a level ("char" or "word") and segmenter; "auto" picks jieba for Chinese
    text and regex otherwise."""
    if level == "char":
        return CharTokenizer()
    if level != "word":
        raise UsageError(f"`level` must be char or word, got {level!r}")
    if segmenter == "auto":
        segmenter = "jieba" if text is not None and looks_chinese(text) else "regex"
    if segmenter == "regex":
        return RegexTokenizer()
    if segmenter == "whitespace":
        return WhitespaceTokenizer()
    if segmenter == "jieba":
        return JiebaTokenizer()
    raise UsageError(f"`segmenter` must be one of {', '.join(SEGMENTERS)}, got {segmenter!r}")
