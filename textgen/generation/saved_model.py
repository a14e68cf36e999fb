"""A LanguageModel as a self-contained TensorFlow SavedModel: text in, text out.

Written by `python -m textgen.export RUN_DIR OUT_DIR [--overwrite] [--no-xla]`.

The SavedModel holds only TensorFlow objects (weights, vocabulary, config, traced graphs), so it
loads with plain `tf.saved_model.load(OUT_DIR)` (or TF Serving) in a process that has never heard
of textgen. Its signatures:

`generate` (also `serving_default`), everything in the graph:
    inputs:  prompt tf.string [B], length int32 (), temperature float32 (), top_k int32 (),
             seed int32 ()
    output:  text tf.string [B]
    Same semantics as `LanguageModel.sample` (and `python -m textgen.sample`):
    - `length` is the total number of characters of each text, the prompt included;
    - an empty prompt starts after a newline (the model's default prime), which is not returned;
    - temperature 0 is argmax, top_k 0 means no top-k cut;
    - the same seed gives the same text; argmax and seeded samples equal `model.sample` for the
      same prompt and seed (both run `textgen.network.lean_language_model`, XLA's random kernels
      included). A
      `--no-xla` export draws with TensorFlow's CPU random kernels instead: the same argmax
      text, other (equally random) seeded samples.
    - Characters outside the vocabulary are DROPPED from the prompt (as `--unknown skip` does),
      and the returned text starts with the prompt as it was fed, i.e. without them. A prompt
      made only of unknown characters acts as an empty prompt. (A model whose vocabulary has an
      unknown token maps them to it instead, as its `encode` does.)
    - All prompts of one call must have the same number of characters (after dropping unknown
      ones): they are primed together as one [B, T] batch, and padding would change the state.
      Send prompts of different lengths in separate calls.
    - Word-level jieba models take the prompt already segmented, words separated by spaces
      (jieba cannot run in a graph), and return text joined without spaces.
    - Word-level models (regex or whitespace segmenter) work the same with tokens for characters:
      the prompt is tokenised in the graph by the tokenizer's RE2 rewrites, `length` counts
      tokens, and `<unk>` is never sampled.
    Bad arguments (length shorter than the prompt, length <= 0, temperature < 0, top_k < 0,
    prompts of different lengths) fail with InvalidArgumentError naming the problem.

`generate_document`, whole documents (`python -m textgen.sample --documents N`):
    inputs and output: those of `generate`, which it equals but for two things, when the model
    was trained on several documents (its vocabulary has the end-of-document token):
    - every text starts after the end-of-document token, as a document did in training, and
      then with the prompt (an empty one: the document's start is sampled too);
    - each row stops at the next end-of-document token, which is not returned, or at `length`.
    The same prompt and seed give the text of `LanguageModel.sample_documents`. For a model
    trained on one text it is `generate`.

`step`, for streaming one character at a time:
    inputs:  token_ids int32 [B], state_0 ... state_{N-1} float32 [B, hidden_size]
    outputs: logits float32 [B, vocab], state_0 ... state_{N-1} (the new states)
    Zero states start a text. LSTM layers have two states each (h, c), GRU and RNN layers one.

`score`, how likely each text is (`textgen.generation.log_probability`; `LanguageModel.score_each`
in Python):
    inputs:  text tf.string [B]
    outputs: log_prob float32 [B] (nats), tokens int32 [B], characters int32 [B]
    Each text is scored on its own, as `python -m textgen.score --per-line` scores a line: from
    zero state, after the default prime (a newline), every token predicted from those before
    it. Characters outside the vocabulary are dropped and not counted, as in `generate`; a
    word-level model maps them to `<unk>`. Bits per character: -log_prob / ln 2 / characters.

`stream_start` and `stream_block`, `generate` one block of 64 tokens at a time (the server's
`:stream`, `python -m textgen.serve`):
    stream_start inputs: prompt tf.string [B], length int32 ()
                 outputs: prompt tf.string [B] (as fed: unknown characters dropped),
                          token_ids int32 [B], num_new int32 [B], state_0 ... state_{N-1}
    stream_block inputs: start int32 () (0, 64, 128, ...), count int32 () (how many of the
                          block's 64 tokens to return, <= 64), token_ids int32 [B], the states,
                          temperature float32 (), top_k int32 (), seed int32 ()
                 outputs: text tf.string [B] (the first `count` new tokens), token_ids, states
    Feed each call's token_ids and states to the next, with start += 64, until num_new tokens
    are out. The prompt, then the blocks' texts, are `generate`'s text for the same arguments
    and seed, wherever `generate` runs its loop with XLA (fewer streams than xla_max_streams)
    or the export has none (`--no-xla`). Word-level models return each block's words joined as
    `generate` joins them; a block boundary is a word boundary.

A conditioned model (trained with --labels) has one more input in `generate`,
`generate_document`, `score`, `step`, `stream_start` and `stream_block`: `label` tf.string [B],
each row's label ("" or
"<none>": none), and one more signature, `labels`, with no inputs and the output labels
tf.string [L], the names it knows, "<none>" first. An unknown label fails with
InvalidArgumentError naming the known ones. Its texts start after the end-of-document token,
as `LanguageModel.sample` and `score` start theirs.

Also on the loaded object: `vocabulary` (string variable, token i is id i), `config_json`
(string variable: cell, sizes, state names, the generation loop) and `default_prime_id`, and
`xla_max_streams` (int32 variable): `generate` runs its XLA-compiled loop for fewer streams than
this and the graph loop from this many on, as measured on the exporting machine
(`textgen.generation.loop_choice`; 0 with `--no-xla`). Assign it to change the crossover.

Speed: the generation loop runs one lean step per character
(`textgen.network.lean_language_model`). The embedding
and the first layer's input projection are folded into one [vocab, G*H] table, so layer 0 costs
one gather and one recurrent matmul; every upper layer is one matmul of [x, h] with the stacked
[kernel; recurrent_kernel]. Gate permutations and bias sums are done once, not per step. Inside
`generate`, step, sampler and loop are compiled by XLA, 64 steps per call
(`textgen.generation.decode_loop.compiled_decode_loop`); XLA compiles on the first call for each
batch size and
sampler (a second or two). TF Serving on CPU runs such a model only with
`--xla_cpu_compilation_enabled=true`; export with `--no-xla` for a model without XLA.
"""

import json

import tensorflow as tf

from textgen.corpus.vocabulary import END_OF_DOCUMENT
from textgen.errors import UsageError
from textgen.generation import loop_choice
from textgen.generation.decode_loop import compiled_steps
from textgen.generation.log_probability import step_log_probs
from textgen.generation.samplers import GreedySampler, RandomSampler, TopKSampler
from textgen.io import check_out_directory, replace_directory
from textgen.network.lean_language_model import LeanLanguageModel, lean_weights
from textgen.network.precision import CPUINFO, native_bfloat16_tensor
from textgen.network.precision import resolve as resolve_precision

# ---- text <-> tokens in the graph ----


class CharacterTokens:
    """Characters are Unicode code points, as `list(text)` in Python."""

    @staticmethod
    def tokenize(texts):
        return tf.strings.unicode_split(texts, "UTF-8")  # invalid UTF-8 becomes U+FFFD

    @staticmethod
    def detokenize(tokens):
        return tf.strings.reduce_join(tokens, axis=-1)


class WordTokens:
    """Word-level models: the tokenizer's own in-graph rewrites (`tokenize_tf`, `detokenize_tf`)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def tokenize(self, texts):
        return tf.map_fn(
            self.tokenizer.tokenize_tf,
            texts,
            fn_output_signature=tf.RaggedTensorSpec([None], tf.string),
        )

    def detokenize(self, tokens):
        return self.tokenizer.detokenize_tf(tokens)


def in_graph_tokenizer(model):
    if model.level == "char":
        return CharacterTokens()
    tokenizer = model.tokenizer
    if not hasattr(tokenizer, "tokenize_tf"):
        raise UsageError(
            f"a word-level model with the {tokenizer.name} segmenter "
            "cannot be exported: its tokenizer does not run inside a TensorFlow "
            "graph (the regex and whitespace segmenters do)"
        )
    return WordTokens(tokenizer)


# ---- the SavedModel ----


class ExportedLanguageModel(tf.Module):
    """A tf.Module holding only TensorFlow objects: lean weights, vocabulary, config, signatures."""

    def __init__(self, model, xla=True):
        super().__init__(name="textgen_language_model")
        self.cell, self.num_layers, self.units = model.cell, model.num_layers, model.hidden_size
        self.xla = xla
        # The graph loop's matmul precision (model.generation_precision, resolved here: auto is
        # bfloat16 where the exporting CPU has the instructions). A bfloat16 export checks the
        # CPU it runs on and runs float32 where bfloat16 would be emulated.
        self.precision = resolve_precision(model.generation_precision)
        # Where a bfloat16 export reads the CPU's flags at run time; a variable, so it can be
        # pointed elsewhere (the tests point it at files of other CPUs).
        self.cpuinfo = tf.Variable(CPUINFO, trainable=False, name="cpuinfo")
        # From how many streams `generate` takes the graph loop instead of XLA's: measured on
        # the exporting machine (textgen.generation.loop_choice); a variable, so it can be changed.
        limit = loop_choice.xla_max_streams(model, precision=self.precision) if xla else 0
        self.xla_max_streams = tf.Variable(
            loop_choice.as_tensor(limit), trainable=False, name="xla_max_streams"
        )
        self.level = model.level
        self.tokenizer = in_graph_tokenizer(model)
        tokens = list(model.vocabulary.tokens)
        unknown_token = model.vocabulary.unknown_token
        self.lean_weights = {
            name: tf.Variable(value, trainable=False, name=name)
            for name, value in lean_weights(model).items()
        }
        self.label_names = model.labels
        self.end_of_document = model.lean_end_of_document()
        num_states = model.num_layers * model.recurrent_stack.states_per_layer
        self.state_names = [f"state_{i}" for i in range(num_states)]
        config = {
            "format": "textgen-saved-model-1",
            "generation_loop": loop_choice.describe(limit),
            # The graph loop's matmuls; bfloat16 only where the CPU running the model has
            # bfloat16 instructions (read from /proc/cpuinfo at run time), else float32.
            "precision": self.precision,
            "cell": model.cell,
            "num_layers": model.num_layers,
            "hidden_size": model.hidden_size,
            "embedding_size": model.embedding_size,
            "vocabulary_size": len(tokens),
            "level": self.level,
            "segmenter": model.segmenter,
            "unknown_token": unknown_token,
            "state_names": self.state_names,
            "default_prime": model.default_prime(),
            "end_of_document": END_OF_DOCUMENT if END_OF_DOCUMENT in model.vocabulary else None,
            "labels": model.labels,
            "label_injection": model.label_injection if model.labels else None,
            # What `python -m textgen.serve` fills in for inputs a request leaves out (a
            # SavedModel signature has no optional inputs; TF Serving needs every one).
            "serving_defaults": {"length": 200, "temperature": 1.0, "top_k": 0, "label": ""},
            "prompt_tokens_outside_the_vocabulary": "dropped"
            if unknown_token is None
            else f"mapped to {unknown_token}",
        }
        self.vocabulary = tf.Variable(tokens, trainable=False, dtype=tf.string, name="vocabulary")
        self.config_json = tf.Variable(
            json.dumps(config, ensure_ascii=False), trainable=False, name="config_json"
        )
        self.default_prime_id = tf.Variable(
            model.vocabulary.id(model.default_prime()),
            trainable=False,
            dtype=tf.int32,
            name="default_prime_id",
        )
        # Tokens sampling never emits (`<unk>`), as `model.sample` does by default; None when
        # there are none, which saves a select per step.
        forbidden = model.forbidden_tokens()
        self.forbidden = (
            tf.Variable(forbidden, trainable=False, name="forbidden") if forbidden.any() else None
        )
        # The end-of-document token's id (generate_document), or None for a one-text model.
        self.end_of_document_id = model.vocabulary.index.get(END_OF_DOCUMENT)
        self.token_ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(tokens), tf.range(len(tokens), dtype=tf.int32)
            ),
            default_value=-1 if unknown_token is None else tokens.index(unknown_token),
        )
        label_input = []
        if model.labels:
            self.labels = tf.Variable(model.labels, trainable=False, dtype=tf.string, name="labels")
            names = ["", *model.labels]
            self.label_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(names), tf.constant([0, *range(len(model.labels))], tf.int32)
                ),
                default_value=-1,
            )
            label_input = [tf.TensorSpec([None], tf.string, name="label")]
            self.list_labels = tf.function(lambda: {"labels": tf.identity(self.labels)})
        generate_inputs = [
            tf.TensorSpec([None], tf.string, name="prompt"),
            tf.TensorSpec([], tf.int32, name="length"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.int32, name="seed"),
            *label_input,
        ]
        self.generate = tf.function(self._generate, input_signature=generate_inputs)
        self.generate_document = tf.function(
            self._generate_document, input_signature=generate_inputs
        )
        self.step = tf.function(
            self._step,
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="token_ids"),
                *[tf.TensorSpec([None, self.units], tf.float32, name=n) for n in self.state_names],
                *label_input,
            ],
        )
        self.score = tf.function(
            self._score,
            input_signature=[tf.TensorSpec([None], tf.string, name="text"), *label_input],
        )
        state_inputs = [
            tf.TensorSpec([None, self.units], tf.float32, name=n) for n in self.state_names
        ]
        self.stream_start = tf.function(
            self._stream_start,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="prompt"),
                tf.TensorSpec([], tf.int32, name="length"),
                *label_input,
            ],
        )
        self.stream_block = tf.function(
            self._stream_block,
            input_signature=[
                tf.TensorSpec([], tf.int32, name="start"),
                tf.TensorSpec([], tf.int32, name="count"),
                tf.TensorSpec([None], tf.int32, name="token_ids"),
                *state_inputs,
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int32, name="top_k"),
                tf.TensorSpec([], tf.int32, name="seed"),
                *label_input,
            ],
        )

    def _bfloat16_here(self):
        return native_bfloat16_tensor(tf.convert_to_tensor(self.cpuinfo))

    def lean_model(self, xla=False, xla_max_streams=None, precision="float32"):
        # Each weight is read once per call; the loop body then uses plain tensors.
        weights = {name: tf.convert_to_tensor(v) for name, v in self.lean_weights.items()}
        return LeanLanguageModel(
            weights,
            self.cell,
            self.num_layers,
            self.units,
            xla,
            xla_max_streams,
            end_of_document=self.end_of_document,
            precision=precision,
        )

    def label_ids(self, label, batch):
        """int32 [B] label ids of the `label` strings (None without labels); an unknown one
        fails naming the known ones."""
        if label is None:
            return None
        ids = self.label_table.lookup(label)
        known = ", ".join(self.label_names[1:])
        checks = [
            tf.debugging.assert_non_negative(
                ids, f"unknown label; this model knows {known} (or <none>, or an empty label)"
            ),
            tf.debugging.assert_equal(tf.shape(label)[0], batch, "give one label per row"),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(ids)

    def _generate(self, prompt, length, temperature, top_k, seed, label=None):
        return self._generate_text(prompt, length, temperature, top_k, seed, None, label)

    def _generate_document(self, prompt, length, temperature, top_k, seed, label=None):
        return self._generate_text(
            prompt, length, temperature, top_k, seed, self.end_of_document_id, label
        )

    def _prime_plan(self, prompt, length, end, label):
        """What `generate` primes with: (prompt_ids [B, P] as fed, prime_ids [B, T >= 1], the
        number of new tokens, label ids or None), after checking the arguments."""
        unit = "characters" if self.level == "char" else "tokens"
        tf.debugging.assert_positive(length, f"length must be a positive number of {unit}")
        ids = self.token_ids.lookup(self.tokenizer.tokenize(prompt))  # ragged [B, None]
        ids = tf.ragged.boolean_mask(ids, ids >= 0)  # unknown ones are dropped (module docstring)
        prompt_lengths = tf.cast(ids.row_lengths(), tf.int32)
        prompt_length = tf.reduce_max(tf.concat([prompt_lengths, [0]], axis=0))
        tf.debugging.assert_equal(
            prompt_lengths,
            tf.fill(tf.shape(prompt_lengths), prompt_length),
            f"all prompts of one call must have the same number of {unit} (after dropping those "
            "outside the vocabulary); send prompts of different lengths in separate calls",
        )
        tf.debugging.assert_greater_equal(
            length, prompt_length, f"length (in {unit}, prompt included) is shorter than the prompt"
        )
        given = prompt_length > 0
        batch = tf.shape(prompt)[0]
        labels = self.label_ids(label, batch)
        prompt_ids = ids.to_tensor(shape=[batch, prompt_length])
        if labels is not None:  # a new document of the label, as `LanguageModel.sample`
            prime_ids = tf.concat([tf.fill([batch, 1], self.default_prime_id), prompt_ids], 1)
            num_new = length - prompt_length
        elif end is None:
            prime_ids = tf.cond(
                given,
                lambda: prompt_ids,
                lambda: tf.fill([batch, 1], tf.convert_to_tensor(self.default_prime_id)),
            )
            num_new = tf.where(given, length - prompt_length, length)
        else:  # a document: after the end token, then the prompt
            prime_ids = tf.concat([tf.fill([batch, 1], end), prompt_ids], axis=1)
            num_new = length - prompt_length
        return prompt_ids, prime_ids, num_new, labels

    def _check_sampler(self, temperature, top_k):
        tf.debugging.assert_non_negative(temperature, "temperature must be >= 0 (0 means argmax)")
        tf.debugging.assert_non_negative(top_k, "top_k must be >= 0 (0 means no cut)")

    def _generate_text(self, prompt, length, temperature, top_k, seed, end, label=None):
        """`generate`; with `end` (the end-of-document id) `generate_document`."""
        self._check_sampler(temperature, top_k)
        prompt_ids, prime_ids, num_new, labels = self._prime_plan(prompt, length, end, label)
        batch = tf.shape(prompt)[0]
        forbidden = None if self.forbidden is None else tf.convert_to_tensor(self.forbidden)
        # decode_loop cannot stack zero steps or zero rows of unknown shape: skip it then.
        new_ids = tf.cond(
            (num_new > 0) & (batch > 0),
            lambda: self.lean_model(
                self.xla,
                tf.convert_to_tensor(self.xla_max_streams),
                self._bfloat16_here if self.precision == "bfloat16" else "float32",
            ).generate_ids(prime_ids, num_new, temperature, top_k, seed, forbidden, end, labels),
            lambda: tf.zeros([batch, 0], tf.int32),
        )
        # As model.sample: the prompt as it was fed (an empty one stays empty), then the new tokens.
        all_ids = tf.concat([prompt_ids, new_ids], axis=1)
        tokens = tf.gather(tf.convert_to_tensor(self.vocabulary), all_ids)
        if end is not None:  # each row up to its first end token
            before_end = tf.cumsum(tf.cast(tf.equal(all_ids, end), tf.int32), axis=1) == 0
            tokens = tf.ragged.boolean_mask(tokens, before_end)
        return {"text": self.tokenizer.detokenize(tokens)}

    def _stream_start(self, prompt, length, label=None):
        """`stream_start`: `generate`'s priming, with the states it reaches as outputs."""
        prompt_ids, prime_ids, num_new, labels = self._prime_plan(prompt, length, None, label)
        lean = self.lean_model()
        batch = tf.shape(prompt)[0]
        states = lean.prime(prime_ids[:, :-1], lean.initial_states(batch, labels))
        states, _ = lean.split_label_state(states)  # stream_block derives it from `label` again
        prompt_tokens = tf.gather(tf.convert_to_tensor(self.vocabulary), prompt_ids)
        return {
            "prompt": self.tokenizer.detokenize(prompt_tokens),
            "token_ids": prime_ids[:, -1],
            "num_new": tf.fill([batch], num_new),
            **dict(zip(self.state_names, states)),
        }

    def _stream_block(self, start, count, token_ids, *rest):
        """`stream_block`: steps start ... start + 63 of `generate`'s loop (the same compiled
        block, the same seed per step), the first `count` of them detokenized."""
        num_states = len(self.state_names)
        states = list(rest[:num_states])
        temperature, top_k, seed = rest[num_states : num_states + 3]
        self._check_sampler(temperature, top_k)
        lean = self.lean_model()
        batch = tf.shape(token_ids)[0]
        if self.label_names:
            label = rest[num_states + 3]
            states.append(lean.initial_states(batch, self.label_ids(label, batch))[-1])
        forbidden = None if self.forbidden is None else tf.convert_to_tensor(self.forbidden)
        seed_pair = tf.stack([seed, 0])

        def run(sampler):
            block = compiled_steps(lean.step, sampler, forbidden, jit_compile=self.xla)
            return block(start, token_ids, states, seed_pair)

        next_ids, new_states, block = tf.case(
            [
                (tf.equal(temperature, 0.0), lambda: run(GreedySampler())),
                (top_k > 0, lambda: run(TopKSampler(top_k, temperature))),
            ],
            default=lambda: run(RandomSampler(temperature)),
        )
        new_states, _ = lean.split_label_state(new_states)
        kept = tf.gather(tf.convert_to_tensor(self.vocabulary), block[:, :count])
        return {
            "text": self.tokenizer.detokenize(kept),
            "token_ids": next_ids,
            **dict(zip(self.state_names, new_states)),
        }

    def _step(self, token_ids, *states):
        lean = self.lean_model()
        states = list(states)
        if self.label_names:  # the label state, from the last input
            label_state = lean.initial_states(
                tf.shape(token_ids)[0], self.label_ids(states.pop(), tf.shape(token_ids)[0])
            )[-1]
            states.append(label_state)
        logits, new_states = lean.step(token_ids, states)
        return {"logits": logits, **dict(zip(self.state_names, new_states))}

    def _score(self, text, label=None):
        """log p(text) from zero state after the default prime, per text; see the module
        docstring. Runs the lean step token by token
        (`textgen.generation.log_probability.step_log_probs`)."""
        ids = self.token_ids.lookup(self.tokenizer.tokenize(text))  # ragged [B, None]
        ids = tf.ragged.boolean_mask(ids, ids >= 0)  # as `generate`: unknown ones are dropped
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        targets = ids.to_tensor()
        batch = tf.shape(text)[0]
        first = tf.fill([batch, 1], tf.convert_to_tensor(self.default_prime_id))
        inputs = tf.concat([first, targets[:, :-1]], axis=1)[:, : tf.shape(targets)[1]]
        lean = self.lean_model()
        states = lean.initial_states(batch, self.label_ids(label, batch))
        log_prob = step_log_probs(lean.step, inputs, targets, lengths, states)
        if self.level == "char":
            characters = lengths
        else:
            characters = tf.strings.length(text, unit="UTF8_CHAR")
        return {"log_prob": log_prob, "tokens": lengths, "characters": characters}

    def signatures(self):
        generate = self.generate.get_concrete_function()
        return {
            "serving_default": generate,
            "generate": generate,
            "generate_document": self.generate_document.get_concrete_function(),
            "step": self.step.get_concrete_function(),
            "score": self.score.get_concrete_function(),
            "stream_start": self.stream_start.get_concrete_function(),
            "stream_block": self.stream_block.get_concrete_function(),
            **({"labels": self.list_labels.get_concrete_function()} if self.label_names else {}),
        }


# ---- writing it, atomically ----


def export_saved_model(model, out_directory, overwrite=False, xla=True, also=None):
    """Writes `model` (a textgen LanguageModel) as a SavedModel in `out_directory`.

    `overwrite` allows replacing a non-empty `out_directory`; `xla=False` leaves the generation
    loop uncompiled (slower, and seeded samples differ from `model.sample`'s; for servers without
    XLA). `also`, a function of the folder being written, writes more files beside the
    SavedModel (the edge exports: `textgen.edge.language_model.edge_writer`).

    The SavedModel is written into a temporary directory beside `out_directory` and renamed into
    place; an existing export (with `overwrite`) is renamed aside first and deleted last. So a
    failed or interrupted export (`also` included) leaves the old model (or nothing), never a
    half-written one.
    """
    check_out_directory(out_directory, overwrite)
    module = ExportedLanguageModel(model, xla)

    def write(path):
        tf.saved_model.save(module, path, module.signatures())
        if also is not None:
            also(path)

    replace_directory(out_directory, write)
    return out_directory
