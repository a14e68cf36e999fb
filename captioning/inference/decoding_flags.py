"""The decoding flags that `captioning.caption` and `captioning.evaluate` share, written once:
each CLI's config declares `name: type = decoding_field("name")`, and `decode_options(config)`
turns whichever of them a config has into the `DecodeOptions` the models decode with."""

import dataclasses

# name: (default, metadata). The defaults decode as the project always has: beam search, beam 3,
# 20 words, no controls.
DECODING_FIELDS = {
    "beam_size": (3, {"help": "beams per image, >= 1; 1 is greedy decoding"}),
    "max_length": (20, {"help": "most words per caption"}),
    "temperature": (
        0.0,
        {
            "default_help": "0, beam search",
            "help": "sample with this temperature instead of beam search",
        },
    ),
    "top_k": (
        0,
        {
            "default_help": "0, all",
            "help": "with --temperature: sample among the k most probable words",
        },
    ),
    "top_p": (
        1.0,
        {
            "default_help": "1, all",
            "help": "with --temperature: sample from the nucleus, the fewest most probable words "
            "whose probabilities reach P (Holtzman et al.)",
            "metavar": "P",
        },
    ),
    "seed": (
        0,
        {"help": "with --temperature: the seed of the draws; the same seed, the same captions"},
    ),
    "allow_unk": (
        False,
        {"help": "allow <unk> in captions (by default never emitted); run directories only"},
    ),
    "length_normalization": (
        0.0,
        {
            "metavar": "ALPHA",
            "default_help": "0, plain log-probability",
            "help": "rank finished beams by log_prob / length**ALPHA (1: the average "
            "log-probability per word), so that longer captions are not penalised",
        },
    ),
    "length_penalty": (
        0.0,
        {
            "metavar": "ALPHA",
            "default_help": "0, none",
            "help": "rank finished beams by log_prob / ((5 + length) / 6)**ALPHA, Wu et al.'s "
            "length penalty (GNMT; 0.6 to 1 is usual); instead of --length-normalization",
        },
    ),
    "block_repeat_ngrams": (
        0,
        {
            "metavar": "N",
            "default_help": "0, off",
            "help": "no caption holds an n-gram of N words twice (3: trigram blocking): a "
            "constraint on the beams, so the search finds the best caption without one",
        },
    ),
    "no_repeat_words": (
        False,
        {
            "help": "no word twice in a caption, except function words (a, the, and, of, with, "
            "..., captioning.datasets.tokens.REPEATABLE_WORDS)"
        },
    ),
    "bad_endings": (
        False,
        {
            "help": "no caption ends on a, an, the, with, and, of, ... "
            "(captioning.datasets.tokens.BAD_ENDINGS): a constraint on the beams, not a filter "
            "afterwards"
        },
    ),
    "diverse_groups": (
        1,
        {
            "metavar": "G",
            "default_help": "1, plain beam search",
            "help": "diverse beam search (Vijayakumar et al.): the beams form G groups (G must "
            "divide --beam-size) that choose in turn, each paying --diversity for a word an "
            "earlier group chose at the same step; with --n-best, lists that differ in more "
            "than one word",
        },
    ),
    "diversity": (
        0.0,
        {
            "metavar": "LAMBDA",
            "default_help": "0",
            "help": "with --diverse-groups: nats a word costs for each earlier group that chose "
            "it at the same step (0.5 to 2 is usual)",
        },
    ),
}


def decoding_field(name):
    default, metadata = DECODING_FIELDS[name]
    return dataclasses.field(default=default, metadata=dict(metadata))


def decode_options(config, **overrides):
    """The DecodeOptions of a CLI config: its decoding fields (those it has; the rest keep
    DecodeOptions' defaults) and `overrides`."""
    from captioning.inference.loading import DecodeOptions

    values = {
        ("allow_unknown" if name == "allow_unk" else name): getattr(config, name)
        for name in DECODING_FIELDS
        if hasattr(config, name)
    }
    if hasattr(config, "n_best"):
        values["n_best"] = config.n_best
    return DecodeOptions(**{**values, **overrides})
