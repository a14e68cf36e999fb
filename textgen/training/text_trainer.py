"""Stateful truncated-BPTT training of a LanguageModel, with checkpoints, resume and a time budget.

State handling, at explicit points:
- The training text is laid out as `batch_size` contiguous streams (`StreamBatches`). The states
  that row r reaches at the end of batch k are fed, as plain values, as the initial states of
  row r in batch k+1, so gradients flow only through the `seq_length` steps of one batch.
- The states are reset to zero at the start of every epoch.
- Validation starts its own streams from zero states and never touches the training states.
- A checkpoint stores the training states, so a resumed run continues the same trajectory.
"""

import keras
import numpy as np
import tensorflow as tf

from textgen import config as config_lib
from textgen.corpus.documents import describe_data
from textgen.corpus.labelled_stream_batches import LabelledStreamBatches
from textgen.corpus.prepared_corpus import corpus_for_training
from textgen.corpus.stream_batches import (
    StreamBatches,
    auto_val_max_tokens,
    minimum_corpus_length,
    validation_steps,
)
from textgen.errors import UsageError
from textgen.network.language_model import LanguageModel
from textgen.training import fine_tuning
from textgen.training.distribution import (
    StreamPlacement,
    batch_parts,
    make_strategy,
    use_one_thread_per_part,
)
from textgen.training.loop import TrainingLoop, apply_gradients, global_mean, make_optimizer
from textgen.training.loss_units import format_loss, metrics
from textgen.training.progress import TextProgress


def resumed_remap(corpus, vocabulary, data):
    """The table from the corpus's ids to those of the run's `vocabulary` (`StreamBatches`'
    `remap`): None when the corpus gives the run's vocabulary (the rule, but for a fine-tuning
    run, whose vocabulary is merged), a table when it gives a part of it, a UsageError naming
    what the run's vocabulary lacks otherwise."""
    if corpus.vocabulary == vocabulary:
        return None
    missing = [t for t in corpus.vocabulary.tokens if t not in vocabulary]
    if missing and vocabulary.unknown_token is None:
        raise UsageError(
            f"{data} has characters the run's vocabulary lacks "
            f"({''.join(missing[:20])!r}); resume with the corpus the run was started with"
        )
    return np.array(vocabulary.encode(corpus.vocabulary.tokens), dtype=np.int32)


class TextTrainer(TrainingLoop):
    """The TrainingLoop hooks of a LanguageModel on a text corpus."""

    config_module = config_lib
    progress_type = TextProgress
    export_command = "textgen.export"
    keeps_best = True

    # ---- set-up ----
    def prepare_run(self):
        config, run = self.config, self.run
        # --init-from: the source's architecture is this run's, its level and segmenter decide
        # how the corpus is tokenised. A resumed run has it all in its own files.
        self.weight_source = None
        if config.init_from and not config.resume:
            self.weight_source = fine_tuning.WeightSource.open(config.init_from)
            self.weight_source.configure(config, self.explicit)
        # A memory map of the prepared token ids (prepared first when --data is a text file):
        # batches are views of it, so the corpus never has to fit in memory.
        corpus = corpus_for_training(config, self.explicit, self.progress_bar, self.log)
        self.unit = "char" if config.level == "char" else "tok"
        self.unit_name = "characters" if config.level == "char" else "tokens"
        train_ids, val_ids = corpus.train_ids, corpus.val_ids
        self.vocabulary, remap = corpus.vocabulary, None  # remap: corpus ids -> the run's
        if config.resume:
            self.vocabulary = run.load_vocabulary()
            remap = resumed_remap(corpus, self.vocabulary, config.data)
        elif self.weight_source is not None:
            self.weight_source.check_corpus(corpus, describe_data(config.data))
            self.vocabulary, remap = self.weight_source.merge(corpus.vocabulary)
            self.log(self.weight_source.summary(describe_data(config.data), self.vocabulary))
        minimum = minimum_corpus_length(config.batch_size, config.seq_length, config.val_fraction)
        if corpus.num_tokens < minimum:
            raise UsageError(
                f"{describe_data(config.data)} has {corpus.num_tokens} {self.unit_name}, too "
                f"few for `batch_size` {config.batch_size} x `seq_length` {config.seq_length} "
                f"with `val_fraction` {config.val_fraction}; it needs at least {minimum}: use a "
                "longer corpus or smaller `batch_size`/`seq_length`"
            )
        self.documents = corpus.documents
        if len(val_ids) < config.seq_length + 1:  # whole documents held out: maybe short ones
            raise UsageError(
                f"validation holds out {self.documents.get('val', 0)} of the "
                f"{self.documents['count']} documents of {describe_data(config.data)}, and they "
                f"have {len(val_ids)} {self.unit_name}: too few for one validation row of "
                f"`seq_length` {config.seq_length}; raise `val_fraction` or lower `seq_length`"
            )
        self.coverage = corpus.coverage
        # Bits per character are measured against the original text the validation tokens cover.
        self.characters_per_token = corpus.val_characters_per_token
        val_rows = min(config.batch_size, (len(val_ids) - 1) // config.seq_length)
        self.labels = self.run_labels(corpus) if config.labels else None
        if self.labels is None:
            self.train_batches = StreamBatches(
                train_ids, config.batch_size, config.seq_length, remap
            )
            self.val_batches = StreamBatches(val_ids, val_rows, config.seq_length, remap)
        else:
            self.train_batches, self.val_batches = (
                LabelledStreamBatches(
                    ids,
                    rows,
                    config.seq_length,
                    remap,
                    offsets,
                    labels,
                    len(self.vocabulary),
                    dropout,
                    config.seed,
                )
                for ids, rows, offsets, labels, dropout in zip(
                    (train_ids, val_ids),
                    (config.batch_size, val_rows),
                    corpus.document_offsets,
                    self.document_labels,
                    (config.label_dropout, 0.0),  # validation: every document's true label
                )
            )
        if not config.val_max_tokens:  # auto, resolved once and saved with the run
            config.val_max_tokens = auto_val_max_tokens(
                config, len(self.train_batches), self.train_batches.tokens_per_batch
            )
        # The capped pass: the first batches of every validation stream, the same every time.
        self.val_steps = validation_steps(self.val_batches, config.val_max_tokens)

        # Resolved here, before TensorFlow runs its first op (the thread setting needs that), and
        # saved with the config, so that a resumed run splits its batches the same way.
        config.batch_parts = batch_parts(config.batch_parts, config.batch_size, config.strategy)
        use_one_thread_per_part(config.batch_parts)
        self.strategy = make_strategy(config.strategy)
        self.placement = StreamPlacement(self.strategy, config.batch_size)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = LanguageModel.from_train_config(config, self.vocabulary, self.labels)
            if self.weight_source is not None:
                counts = fine_tuning.token_counts(train_ids, remap, len(self.vocabulary))
                self.weight_source.transfer(self.model, self.vocabulary, counts)
            fine_tuning.freeze(self.model, config)
            self.optimizer = make_optimizer(config.optimizer, config.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
        self.rng = np.random.default_rng(config.seed)  # the periodic samples' seeds
        self.eval_every = config.eval_every
        self.patience = config.patience
        self.states = self.zero_states()

    def run_labels(self, corpus):
        """The run's label names, and `document_labels`: the (train, validation) documents'
        label ids in them. A resumed run keeps its labels.json; a fine-tuning run from a
        conditioned source keeps the source's ids and adds the corpus's new labels."""
        names, remap = list(corpus.label_names), None
        if self.config.resume:
            names = self.run.load_labels()
            missing = [name for name in corpus.label_names if name not in names]
            if missing:
                raise UsageError(
                    f"{describe_data(self.config.data)} has labels the run does not know "
                    f"({', '.join(missing[:5])}); resume with the corpus the run was started with"
                )
            remap = np.array([names.index(name) for name in corpus.label_names], np.int32)
        elif self.weight_source is not None:
            names, remap = self.weight_source.merge_labels(corpus.label_names)
        self.document_labels = [
            labels if remap is None else remap[np.asarray(labels)]
            for labels in corpus.document_labels
        ]
        return names

    def save_run_files(self, run):
        if self.labels:
            run.save_labels(self.labels)
            counts = np.bincount(self.document_labels[0], minlength=len(self.labels))
            run.save_label_counts(self.labels, counts)

    def run_record(self):
        if self.weight_source is None:
            return {}
        return {fine_tuning.RECORD: self.weight_source.record()}

    def restore(self, groups):
        self.restore_variables(groups, "model", self.model.variables, "model")
        self.restore_variables(groups, "optimizer", self.optimizer.variables, "optimizer")
        states = groups.get("states", [])
        expected = (self.config.batch_size, self.config.hidden_size)
        if len(states) != len(self.states) or any(s.shape != expected for s in states):
            raise UsageError(
                "the checkpoint's recurrent states do not match `batch_size`/`hidden_size`"
            )
        self.states = [self.placement.distribute(s) for s in states]
        if self.progress.rng:
            self.rng.bit_generator.state = self.progress.rng

    def zero_states(self):
        """State reset: zeros for every stream, placed on the replica that owns it."""
        return [
            self.placement.distribute(
                np.zeros((self.config.batch_size, self.config.hidden_size), np.float32)
            )
            for _ in self.model.initial_states(1)
        ]

    def compile_steps(self):
        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        replicas = strategy.num_replicas_in_sync
        clip = self.config.grad_clip

        parts = self.config.batch_parts
        rows = self.config.batch_size
        # Rows per group; one group (also each replica's share under a strategy) splits as is.
        splits = 1 if parts == 1 else [rows // parts + (p < rows % parts) for p in range(parts)]

        def summed_loss(inputs, targets, states):
            """(summed loss, new states). With --batch-parts, each group of streams is its own
            branch of the graph (model call, loss and, through the tape, backward pass), and
            TensorFlow runs independent branches in parallel: on a CPU that keeps the cores
            busier than splitting every small per-step op over all of them. The sum, and so the
            gradient, is the same function of the weights; only float rounding (and the
            dropout masks drawn) differ."""
            groups = zip(
                tf.split(inputs, splits),
                tf.split(targets, splits),
                zip(*[tf.split(s, splits) for s in states]),
            )
            totals, group_states = [], []
            for group_inputs, group_targets, group_state in groups:
                logits, new_states = model(group_inputs, list(group_state), training=True)
                totals.append(
                    tf.reduce_sum(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(group_targets, logits)
                    )
                )
                group_states.append(new_states)
            return tf.add_n(totals), [tf.concat(list(s), 0) for s in zip(*group_states)]

        def replica_step(inputs, targets, states):
            count = tf.cast(tf.size(targets), tf.float32)
            with tf.GradientTape() as tape:
                total, new_states = summed_loss(inputs, targets, states)
                loss = global_mean(total, count, replicas)
            apply_gradients(tape, loss, [(optimizer, model.trainable_variables)], clip, replicas)
            return total, count, new_states

        @tf.function(reduce_retracing=True)
        def train_step(inputs, targets, states):
            """(summed loss, token count, new states) of the global batch."""
            total, count, new_states = strategy.run(replica_step, args=(inputs, targets, states))
            total, count = (
                strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in (total, count)
            )
            return total, count, new_states

        @tf.function(reduce_retracing=True)
        def eval_step(inputs, targets, states):
            logits, new_states = model(inputs, states, training=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
            return loss, new_states

        self.train_step, self.eval_step = train_step, eval_step

    # ---- the loop's hooks ----
    def describe(self):
        c, batches = self.config, self.train_batches
        coverage = (
            f" (coverage {self.coverage:.2%} of tokens are not <unk>)"
            if self.vocabulary.unknown_token is not None
            else ""
        )
        documents = self.documents
        if documents.get("split") == "documents":
            coverage += f"; {documents['count']:,} documents, {documents['val']:,} held out"
        if self.labels:
            coverage += (
                f"; {len(self.labels) - 1} labels, entering {c.label_injection}, "
                f"{c.label_dropout:.0%} of training documents as <none>"
            )
        return (
            f"vocabulary {len(self.vocabulary)} {self.unit_name}{coverage}; train "
            f"{batches.inputs.size:,} / validation {self.val_batches.inputs.size:,} "
            f"{self.unit_name}{self.validation_cap()}; {len(batches)} batches of "
            f"{c.batch_size} x {c.seq_length} per epoch; {self.model.count_params():,} parameters"
            + (f"; {c.batch_parts} groups of streams in parallel" if c.batch_parts > 1 else "")
        )

    def kernel_shape(self):
        c = self.config
        return {**super().kernel_shape(), "seq_length": c.seq_length, "batch_parts": c.batch_parts}

    def measurement_batch(self):
        return self.train_batches[0]

    def measured_states(self):
        return self.states

    def restore_measured_states(self, saved):
        self.states = saved

    def validation_cap(self):
        """' (N per evaluation: ...)' when --val-max-tokens cuts the validation pass short."""
        if self.val_steps == len(self.val_batches):
            return ""
        tokens = self.val_steps * self.val_batches.tokens_per_batch
        return (
            f" ({tokens:,} per evaluation: the first {self.val_steps * self.config.seq_length:,} "
            f"of each of its {self.val_batches.batch_size} streams, --val-max-tokens)"
        )

    def steps_per_epoch(self):
        return len(self.train_batches)

    def epoch_size(self):
        return len(self.train_batches) * self.train_batches.tokens_per_batch

    def units_done(self, step_in_epoch):
        return step_in_epoch * self.train_batches.tokens_per_batch

    def start_epoch(self, epoch, step_in_epoch):
        if step_in_epoch == 0:
            # State reset point: every epoch starts its streams from zero states.
            self.states = self.zero_states()

    def batches(self, epoch, first_step):
        for step in range(first_step, len(self.train_batches)):
            yield self.train_batches[step], self.train_batches.tokens_per_batch

    def training_step(self, batch):
        inputs, targets = batch
        if not self.config.stateful:
            self.states = self.zero_states()
        total, count, self.states = self.train_step(
            self.placement.distribute(inputs), self.placement.distribute(targets), self.states
        )
        return float(total), float(count)

    def after_step(self):
        if self.config.sample_every and self.progress.global_step % self.config.sample_every == 0:
            self.show_sample()

    def evaluate(self):
        """Mean validation loss (nats/token) over the validation streams, from zero states."""
        states = self.model.initial_states(self.val_batches.batch_size)
        total = 0.0
        for k in range(self.val_steps):  # --val-max-tokens: the first batches of every stream
            if not self.config.stateful:
                states = self.model.initial_states(self.val_batches.batch_size)
            inputs, targets = self.val_batches[k]
            loss, states = self.eval_step(inputs, targets, states)
            total += float(loss)
        return total / self.val_steps

    def validation_metrics(self, val):
        return {"val_bits_per_char": metrics(val, self.characters_per_token)["bits_per_char"]}

    def format_loss(self, name, nats):
        return format_loss(name, nats, self.characters_per_token, self.config.level)

    def checkpoint_groups(self):
        """The states are gathered on every worker (a collective)."""
        self.progress.rng = self.rng.bit_generator.state
        return {
            "model": self.model.variables,
            "optimizer": self.optimizer.variables,
            "states": [self.placement.gather(s) for s in self.states],
        }

    def final_states(self):
        return [self.placement.gather(s) for s in self.states]

    def finish(self):
        if self.config.export:
            self.export()
        return None

    def export_saved_model(self, path):
        """RUN/saved_model holds the best evaluation's weights, as sample and score use."""
        from textgen.generation.saved_model import export_saved_model

        model = self.model
        if self.progress.best_step != self.progress.global_step and self.run.has_best_checkpoint():
            model = LanguageModel.from_run_directory(self.config.out, weights="best")
        # A run trained in float32 on purpose exports float32; otherwise the export's auto.
        model.generation_precision = "float32" if self.config.precision == "float32" else "auto"
        export_saved_model(model, path, overwrite=True)

    def show_sample(self):
        seed = int(self.rng.integers(2**31 - 1))
        text = self.model.sample(length=self.config.sample_length, seed=seed)[0]
        self.log(f"---- sample at step {self.progress.global_step} ----\n{text}\n----")
        self.tensorboard.text(self.progress.global_step, "samples", text)
