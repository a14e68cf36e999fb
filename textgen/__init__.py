"""textgen: char-rnn style recurrent language models on Keras 3 / TensorFlow.

Public parts that captioning builds on: `Vocabulary`, `RecurrentStack`, `LanguageModel`,
`RunDirectory`, the samplers, `decode_loop` and `compiled_decode_loop`.
"""

from textgen._quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()

from textgen.errors import TrainingDiverged, UsageError  # noqa: E402
from textgen.language_model import LanguageModel  # noqa: E402
from textgen.recurrent_stack import RecurrentStack  # noqa: E402
from textgen.run_directory import RunDirectory  # noqa: E402
from textgen.sampler import (
    GreedySampler,
    RandomSampler,
    Sampler,
    TopKSampler,  # noqa: E402
    compiled_decode_loop,
    decode_loop,
    make_sampler,
)
from textgen.vocabulary import Vocabulary  # noqa: E402

__all__ = [
    "GreedySampler",
    "LanguageModel",
    "RandomSampler",
    "RecurrentStack",
    "RunDirectory",
    "Sampler",
    "TopKSampler",
    "TrainingDiverged",
    "UsageError",
    "Vocabulary",
    "compiled_decode_loop",
    "decode_loop",
    "make_sampler",
]
