"""Caption text <-> padded id arrays: tokenisation, the word vocabulary, encoding and decoding.

Every caption becomes `<start> w1 ... wn <end> <pad> ...` with n <= max_length, so a batch is an
int32 array [N, max_length + 2] whose `<pad>` id is 0 (Keras masking and `sparse_categorical`
losses with a mask can then treat 0 as "no token").
"""

import itertools
import re

import numpy as np

from textgen.corpus.vocabulary import Vocabulary
from textgen.errors import UsageError
from textgen.training.run_directory import DAMAGED_RUN

PAD, START, END, UNKNOWN = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNKNOWN)  # in id order: <pad> is 0

# Words a caption should not end on (--bad-endings): self-critical.pytorch's list, with "and"
# and "or". A sequence that ends on one was cut off, however likely the model finds the cut.
BAD_ENDINGS = "a an the in for at of with before after on upon near to is are am and or".split()
# Words --no-repeat-words lets repeat: articles, prepositions, conjunctions, punctuation, which
# a caption of several objects needs more than once ("a red circle and a blue square").
REPEATABLE_WORDS = (
    "a an the and or of with in on at to by for from near next is are , ; :".split() + [END]
)

# A word (letters/digits, with inner apostrophes: "man's") or one punctuation character.
# Specials can never come out of it: "<pad>" in a caption becomes "<", "pad", ">".
TOKEN_PATTERN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize(caption):
    """Lowercased words and punctuation; trailing periods dropped ("A dog." -> ["a", "dog"]),
    since nearly every COCO caption ends with one and it carries nothing to predict."""
    tokens = TOKEN_PATTERN.findall(caption.lower())
    while tokens and tokens[-1] == ".":
        tokens.pop()
    return tokens


def build_vocabulary(token_lists, min_count=1, max_size=None):
    """The word vocabulary of tokenised training captions: SPECIALS first (<pad> = 0), then words
    seen at least `min_count` times by falling count (ties by spelling, so ids are reproducible).
    Rarer words encode as <unk>. `max_size` caps the total size, specials included."""
    if not isinstance(min_count, int) or min_count < 1:
        raise UsageError(f"`min_count` must be a positive integer, got {min_count}")
    if max_size is not None and max_size <= len(SPECIALS):
        raise UsageError(
            f"--max-vocabulary must be larger than {len(SPECIALS)} (the special tokens), "
            f"got {max_size}"
        )
    words = itertools.chain.from_iterable(token_lists)
    return Vocabulary.from_tokens(
        words, specials=SPECIALS, min_count=min_count, max_size=max_size, unknown_token=UNKNOWN
    )


def check_vocabulary(vocabulary, source=None):
    """Raises UsageError unless the vocabulary has the specials with <pad> at id 0 (e.g. a word
    vocabulary saved by textgen would not). `source`: the run directory's vocab.json it was read
    from, which the message then names as damaged."""
    missing = [t for t in SPECIALS if t not in vocabulary]
    if not missing and vocabulary.id(PAD) == 0 and vocabulary.unknown_token == UNKNOWN:
        return
    needs = f"it needs {', '.join(SPECIALS)} with <pad> at id 0 and <unk> as its unknown token"
    if source is not None:
        raise UsageError(f"{source} is not a caption vocabulary ({needs}); {DAMAGED_RUN}")
    raise UsageError(
        f"not a caption vocabulary: {needs}; rebuild it with "
        "captioning.datasets.tokens.build_vocabulary"
    )


def encode_captions(token_lists, vocabulary, max_length):
    """int32 [N, max_length + 2]: <start>, the first `max_length` token ids, <end>, then <pad>s.

    Truncated captions still end in <end>, so the model always learns to stop.
    """
    if not isinstance(max_length, int) or max_length < 1:
        raise UsageError(f"`max_length` must be a positive integer, got {max_length}")
    check_vocabulary(vocabulary)
    token_lists = list(token_lists)
    start, end = vocabulary.id(START), vocabulary.id(END)
    ids = np.zeros((len(token_lists), max_length + 2), np.int32)  # 0 is <pad>
    for row, tokens in enumerate(token_lists):
        encoded = vocabulary.encode(tokens[:max_length])
        ids[row, : len(encoded) + 2] = [start, *encoded, end]
    return ids


def decode_caption(ids, vocabulary):
    """The tokens of one id sequence: a leading <start> is skipped, and <end> or <pad> ends it."""
    tokens = []
    for token in vocabulary.decode(ids):
        if token == START and not tokens:
            continue
        if token in (END, PAD):
            break
        tokens.append(token)
    return tokens


def caption_text(tokens):
    """Tokens back into one string: words joined by spaces, no space before , . ; : ! ? )"""
    return re.sub(r" ([,.;:!?)])", r"\1", " ".join(tokens))
