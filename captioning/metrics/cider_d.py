"""CIDEr-D in NumPy, vectorised over a batch, with the document frequencies computed once.

The reward of self-critical training (`captioning.training.caption_trainer`, --scst-after) is the
CIDEr-D of
every sampled caption against its image's references. pycocoevalcap's `CiderScorer` (which is
CIDEr-D: clipped term frequencies and the Gaussian length penalty, sigma 6) rebuilds Python dicts
of n-grams and recomputes the document frequencies for every call; here the references' tf-idf
vectors and the document frequencies of the training references are built once, and a batch of
captions is scored with sorted integer arrays: each n-gram of token ids is one int64 key.

Definitions, as in pycocoevalcap (and ruotianluo/self-critical.pytorch's CiderD):
- n-grams of 1 to 4 words; df(g) = the number of images whose references contain g; the
  weight of g in a caption is tf(g) * (log(number of images) - log(max(1, df(g))));
- for each reference r: sum over n of the cosine of the n-gram vectors, with the caption's
  weights clipped at the reference's (min(w_c, w_r) * w_r), times exp(-delta**2 / (2 sigma**2))
  with delta the difference of the two "lengths" (pycocoevalcap counts bigrams: words - 1);
- the score is 10 x the mean over n and over the image's references.

Tokens are integers (caption vocabulary ids) below 2**15 - 1, so that a 4-gram fits an int64;
`score_text` maps words to ids for whitespace-tokenised text.
"""

import numpy as np

BASE = 1 << 15  # an n-gram of ids is the number with digits id + 1 in this base
NGRAMS = 4


def ngram_runs(tokens, lengths, n=NGRAMS):
    """The distinct n-grams (1 to n words) of each row of tokens [M, T] (only the first lengths[m]
    tokens count): (row [E], key [E], count [E], order [E]) sorted by row then key."""
    tokens = np.asarray(tokens, np.int64)
    lengths = np.asarray(lengths, np.int64)
    rows, width = tokens.shape
    digits = tokens + 1
    keys, valid = [], []
    current = np.zeros((rows, width), np.int64)
    for order in range(1, n + 1):
        span = width - order + 1
        if span <= 0:
            break
        current = current[:, :span] * BASE + digits[:, order - 1 : order - 1 + span]
        keys.append(current)
        valid.append(np.arange(span)[None, :] + order <= lengths[:, None])
    if not keys:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    keys = np.concatenate(keys, axis=1)
    valid = np.concatenate(valid, axis=1)
    # The invalid windows sort to the end of each row.
    keys = np.sort(np.where(valid, keys, np.iinfo(np.int64).max), axis=1)
    valid = np.arange(keys.shape[1])[None, :] < valid.sum(axis=1)[:, None]
    row_of = np.broadcast_to(np.arange(rows)[:, None], keys.shape)[valid]
    flat = keys[valid]
    new = np.ones(len(flat), bool)
    new[1:] = (flat[1:] != flat[:-1]) | (row_of[1:] != row_of[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(flat)))
    run_keys = flat[starts]
    order = 1 + sum((run_keys >= BASE**k).astype(np.int64) for k in range(1, n))
    return row_of[starts], run_keys, counts, order


def concatenated_ranges(starts, counts):
    """np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)]), vectorised."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.asarray(starts, np.int64), counts) + np.arange(total) - offsets


class CiderD:
    """CIDEr-D against fixed references, with their document frequencies.

    Args:
        references: one list per image of its reference captions, each a sequence of token ids
            (ints below 2**15 - 1) or of words (then `score_text` scores text).
        sigma: the length penalty's standard deviation (6, as CIDEr-D).
        chunk: references encoded at a time (bounds the memory of the set-up).
    """

    def __init__(self, references, sigma=6.0, chunk=20000):
        self.sigma = float(sigma)
        self.word_ids = None
        references = [list(map(list, refs)) for refs in references]
        if any(isinstance(t, str) for refs in references for ref in refs for t in ref):
            self.word_ids = {}
            references = [
                [[self.word_ids.setdefault(t, len(self.word_ids)) for t in ref] for ref in refs]
                for refs in references
            ]
        per_image = np.array([len(refs) for refs in references], np.int64)
        if len(references) == 0 or per_image.min() == 0:
            raise ValueError("CIDEr-D needs at least one reference for every image")
        self.image_ref_start = np.concatenate([[0], np.cumsum(per_image)])[:-1]
        self.image_ref_count = per_image
        flat = [ref for refs in references for ref in refs]
        ref_image = np.repeat(np.arange(len(references)), per_image)
        # Every reference's distinct n-grams, a chunk of references at a time.
        parts = []
        for begin in range(0, len(flat), chunk):
            block = flat[begin : begin + chunk]
            tokens, lengths = pad(block)
            row, key, count, order = ngram_runs(tokens, lengths)
            parts.append((row + begin, key, count, order))
        ref_row, ref_key, ref_count, ref_order = (np.concatenate(p) for p in zip(*parts))
        # Document frequency: the images whose references hold the n-gram.
        image_of = ref_image[ref_row]
        by_key = np.lexsort((image_of, ref_key))
        key_sorted, image_sorted = ref_key[by_key], image_of[by_key]
        first = np.ones(len(key_sorted), bool)
        first[1:] = (key_sorted[1:] != key_sorted[:-1]) | (image_sorted[1:] != image_sorted[:-1])
        self.keys, df = np.unique(key_sorted[first], return_counts=True)
        self.log_df = np.log(np.maximum(1.0, df.astype(np.float64)))
        self.ref_len = np.log(float(len(references)))
        # The references' tf-idf vectors: entries sorted by reference, then n-gram.
        self.ref_entry_start = np.searchsorted(ref_row, np.arange(len(flat)))
        self.ref_entry_count = np.diff(np.append(self.ref_entry_start, len(ref_row)))
        self.ref_entry_index = np.searchsorted(self.keys, ref_key)
        self.ref_entry_weight = ref_count * (self.ref_len - self.log_df[self.ref_entry_index])
        self.ref_entry_order = ref_order
        self.ref_norm = np.sqrt(
            np.bincount(
                ref_row * NGRAMS + ref_order - 1,
                self.ref_entry_weight**2,
                minlength=len(flat) * NGRAMS,
            ).reshape(len(flat), NGRAMS)
        )
        self.ref_length = np.maximum(np.array([len(r) for r in flat], np.int64) - 1, 0)

    @property
    def num_images(self):
        return len(self.image_ref_count)

    def score(self, tokens, lengths, images):
        """CIDEr-D of captions tokens [M, T] (ids; the first lengths[m] count) against the
        references of images [M] (indices into `references`): float64 [M]."""
        tokens = np.asarray(tokens, np.int64)
        lengths = np.minimum(np.asarray(lengths, np.int64), tokens.shape[1])
        images = np.asarray(images, np.int64)
        if tokens.size and tokens.max(initial=0) >= BASE - 1:
            raise ValueError(f"token ids must be below {BASE - 1}, got {tokens.max()}")
        rows = len(tokens)
        if rows == 0:
            return np.zeros(0)
        row, key, count, order = ngram_runs(tokens, lengths)
        index = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        found = self.keys[index] == key
        weight = count * (self.ref_len - np.where(found, self.log_df[index], 0.0))
        norm = np.sqrt(
            np.bincount(row * NGRAMS + order - 1, weight**2, minlength=rows * NGRAMS)
        ).reshape(rows, NGRAMS)
        length = np.maximum(lengths - 1, 0)

        # (caption, reference) pairs: every caption with each of its image's references.
        per_row = self.image_ref_count[images]
        pair_row = np.repeat(np.arange(rows), per_row)
        pair_ref = concatenated_ranges(self.image_ref_start[images], per_row)
        # Every reference entry of every pair, looked up among its caption's n-grams.
        per_pair = self.ref_entry_count[pair_ref]
        entry = concatenated_ranges(self.ref_entry_start[pair_ref], per_pair)
        entry_pair = np.repeat(np.arange(len(pair_ref)), per_pair)
        width = np.int64(len(self.keys))
        caption_keys = row[found] * width + index[found]  # sorted: by row, then key
        wanted = pair_row[entry_pair] * width + self.ref_entry_index[entry]
        at = np.minimum(np.searchsorted(caption_keys, wanted), max(len(caption_keys) - 1, 0))
        hit = caption_keys[at] == wanted if len(caption_keys) else np.zeros(len(wanted), bool)
        ref_weight = self.ref_entry_weight[entry[hit]]
        products = np.minimum(weight[found][at[hit]], ref_weight) * ref_weight
        dot = np.bincount(
            entry_pair[hit] * NGRAMS + self.ref_entry_order[entry[hit]] - 1,
            products,
            minlength=len(pair_ref) * NGRAMS,
        ).reshape(len(pair_ref), NGRAMS)
        norms = norm[pair_row] * self.ref_norm[pair_ref]
        cosine = np.where(norms != 0, dot / np.where(norms != 0, norms, 1.0), dot)
        delta = (length[pair_row] - self.ref_length[pair_ref]).astype(np.float64)
        penalty = np.exp(-(delta**2) / (2 * self.sigma**2))
        pair_score = cosine.mean(axis=1) * penalty
        return 10.0 * np.bincount(pair_row, pair_score, minlength=rows) / per_row

    def score_text(self, captions, images):
        """CIDEr-D of whitespace-tokenised captions (references given as words)."""
        if self.word_ids is None:
            raise ValueError("score_text needs references given as words")
        unseen = {}
        ids = [
            [
                self.word_ids[w]
                if w in self.word_ids
                else unseen.setdefault(w, len(self.word_ids) + len(unseen))
                for w in caption.split()
            ]
            for caption in captions
        ]
        tokens, lengths = pad(ids)
        return self.score(tokens, lengths, images)


def pad(sequences):
    """Token lists -> (int64 [N, longest], lengths [N])."""
    lengths = np.array([len(s) for s in sequences], np.int64)
    tokens = np.zeros((len(sequences), max(1, int(lengths.max(initial=0)))), np.int64)
    for i, sequence in enumerate(sequences):
        tokens[i, : len(sequence)] = sequence
    return tokens, lengths
