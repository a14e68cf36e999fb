"""Loss in the units people compare, and the one-line form every training log prints.

Training sums nats over tokens; people compare perplexity and, across char- and word-level
models of the same text, bits per character of the original text. Both packages print their
losses through `format_loss`, so a captioning log and a textgen log read the same way.
"""

import math

LN2 = math.log(2.0)


def metrics(nats, characters_per_token=1.0):
    """Loss in the units people compare: nats per token, perplexity, and bits per character of
    the original text (total nats over total characters, divided by ln 2), which compares char-
    and word-level models on the same text."""
    return {
        "nats": nats,
        "perplexity": math.exp(min(nats, 700.0)),
        "bits_per_char": nats / characters_per_token / LN2,
    }


def format_loss(name, nats, characters_per_token=1.0, level="char"):
    """One log line for a loss of `nats` per token.

    level "char": nats/char, bits/char and perplexity; "word": nats/token, perplexity and bits
    per character of the text (`characters_per_token` makes them comparable with char level);
    "token": nats/token and perplexity only, for captions, which have no source text whose
    characters would count.
    """
    m = metrics(nats, characters_per_token)
    if level == "char":
        return (
            f"{name} {m['nats']:.4f} nats/char  {m['bits_per_char']:.4f} bits/char  "
            f"perplexity {m['perplexity']:.2f}"
        )
    tokens = f"{name} {m['nats']:.4f} nats/token  perplexity {m['perplexity']:.2f}"
    if level == "token":
        return tokens
    return f"{tokens}  {m['bits_per_char']:.4f} bits/char"
