"""Token <-> id mapping, saved as JSON. Shared by textgen (characters, words) and captioning
(words)."""

import collections
import json

from textgen.errors import UsageError
from textgen.io import atomic_write_text

# The token that ends every document of a corpus of several (`textgen.corpus.documents`). No
# tokeniser produces it from text: characters are single code points, and no word tokeniser
# emits a token holding a space, so a text that spells it out is still its characters or words.
END_OF_DOCUMENT = "<|end of document|>"


class Vocabulary:
    """An ordered list of tokens; a token's id is its position.

    Args:
        tokens: every token, in id order. Special tokens (e.g. `<unk>`, `<pad>`) are ordinary
            entries; `unknown_token` names the one that stands for out-of-vocabulary tokens.
        unknown_token: the token that `encode` maps unknown tokens to, or None to make
            unknown tokens an error.
    """

    def __init__(self, tokens, unknown_token=None):
        tokens = list(tokens)
        if not tokens:
            raise UsageError("the vocabulary is empty: the corpus has no tokens to learn")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        if unknown_token is not None and unknown_token not in tokens:
            raise ValueError(f"unknown_token {unknown_token!r} is not in the vocabulary")
        self.tokens = tokens
        self.unknown_token = unknown_token
        self.index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def from_tokens(cls, tokens, specials=(), min_count=1, max_size=None, unknown_token=None):
        """Builds a vocabulary from a token stream: specials first, then by falling count.

        Ties are broken by the token itself, so the same corpus always gives the same ids.
        """
        return cls.from_counts(
            collections.Counter(tokens), specials, min_count, max_size, unknown_token
        )

    @classmethod
    def from_counts(cls, counts, specials=(), min_count=1, max_size=None, unknown_token=None):
        """`from_tokens` from {token: count}, which a corpus larger than memory is counted
        into."""
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in specials),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(specials))]
        return cls(list(specials) + ranked, unknown_token=unknown_token)

    @classmethod
    def from_characters(cls, text):
        """The character vocabulary of a text: its distinct code points, sorted."""
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.tokens)

    def __contains__(self, token):
        return token in self.index

    def __eq__(self, other):
        return (
            isinstance(other, Vocabulary)
            and self.tokens == other.tokens
            and self.unknown_token == other.unknown_token
        )

    def id(self, token):
        return self.index[token]

    def unknown(self, tokens):
        """The distinct tokens of `tokens` that are not in the vocabulary, in order of
        appearance."""
        return list(dict.fromkeys(t for t in tokens if t not in self.index))

    def encode(self, tokens):
        """Token ids. Unknown tokens map to `unknown_token`, or raise UsageError naming them."""
        if self.unknown_token is None:
            missing = self.unknown(tokens)
            if missing:
                shown = ", ".join(repr(t) for t in missing[:20])
                raise UsageError(f"{len(missing)} token(s) not in the vocabulary: {shown}")
            return [self.index[t] for t in tokens]
        unk = self.index[self.unknown_token]
        return [self.index.get(t, unk) for t in tokens]

    def decode(self, ids):
        return [self.tokens[int(i)] for i in ids]

    def get_config(self):
        return {"tokens": self.tokens, "unknown_token": self.unknown_token}

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`. ValueError saying what is wrong if `config` (e.g. read
        from a damaged vocab.json) is not one: callers add the file and the fix."""
        if not isinstance(config, dict):
            raise ValueError('it is not an object with "tokens" and "unknown_token"')
        tokens, unknown_token = config.get("tokens"), config.get("unknown_token")
        if not isinstance(tokens, list) or not tokens:
            raise ValueError('"tokens" is not a non-empty list of strings')
        for token in tokens:
            if not isinstance(token, str):
                raise ValueError(f"token {token!r} is not a string")
        if unknown_token is not None and not isinstance(unknown_token, str):
            raise ValueError(f'"unknown_token" {unknown_token!r} is not a string')
        return cls(tokens, unknown_token=unknown_token)

    def save(self, path):
        atomic_write_text(path, json.dumps(self.get_config(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_config(json.load(f))
