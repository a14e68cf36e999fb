"""textgen: char-rnn style recurrent language models on Keras 3 / TensorFlow.

The package is in rooms by job (docs/architecture.md): `corpus` (reading, tokenizers,
vocabulary, preparation, the memory-mapped corpus), `network` (the language model, its recurrent
stack and kernels), `generation` (samplers, the decoding loop, streaming, scoring, the
SavedModel) and `training` (the loop, the text trainer, the run directory and its logs). The
command-line modules (`train`, `sample`, `score`, `prepare`, `export`) and the modules every room
uses (`cli`, `config`, `errors`, `io`, `resources`) stay here.

Public parts that captioning builds on: `Vocabulary`, `RecurrentStack`, `LanguageModel`,
`RunDirectory`, the samplers, `decode_loop` and `compiled_decode_loop`. They are imported on
first use (PEP 562), so `import textgen` and a CLI's `--help` or flag error do not wait for
TensorFlow; the first of them to be touched imports TensorFlow quietly
(`textgen._quiet_import`).
"""

import importlib

_PUBLIC = {
    "GreedySampler": "textgen.generation.samplers",
    "RandomSampler": "textgen.generation.samplers",
    "Sampler": "textgen.generation.samplers",
    "TopKSampler": "textgen.generation.samplers",
    "make_sampler": "textgen.generation.samplers",
    "decode_loop": "textgen.generation.decode_loop",
    "compiled_decode_loop": "textgen.generation.decode_loop",
    "LanguageModel": "textgen.network.language_model",
    "RecurrentStack": "textgen.network.recurrent_stack",
    "RunDirectory": "textgen.training.run_directory",
    "Vocabulary": "textgen.corpus.vocabulary",
    "TrainingDiverged": "textgen.errors",
    "UsageError": "textgen.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'textgen' has no attribute {name!r}")
    if module != "textgen.errors":
        from textgen._quiet_import import import_tensorflow_quietly

        import_tensorflow_quietly()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
