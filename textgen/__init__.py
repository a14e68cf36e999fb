"""textgen: char-rnn style recurrent language models on Keras 3 / TensorFlow.

Public parts that captioning builds on: `Vocabulary`, `RecurrentStack`, `LanguageModel`,
`RunDirectory`, the samplers and `decode_loop`.
"""

from textgen.errors import TrainingDiverged, UsageError
from textgen.language_model import LanguageModel
from textgen.recurrent_stack import RecurrentStack
from textgen.run_directory import RunDirectory
from textgen.sampler import GreedySampler, RandomSampler, Sampler, TopKSampler, decode_loop, make_sampler
from textgen.vocabulary import Vocabulary

__all__ = ["GreedySampler", "LanguageModel", "RandomSampler", "RecurrentStack", "RunDirectory",
           "Sampler", "TopKSampler", "TrainingDiverged", "UsageError", "Vocabulary", "decode_loop",
           "make_sampler"]
