"""The generation-time language model: lean weights folded from a LanguageModel, a one-gather,
one-matmul-per-layer step, a sequence call to prime, and the generation loop.

`LanguageModel.sample` and the exported SavedModel's `generate` both run this model, so the same
prompt, seed and settings give the same text in Python and from the SavedModel. It is built only
from TensorFlow ops on plain weight tensors (no Keras), with explicit states in and out, for any
batch size.
"""

import numpy as np
import tensorflow as tf

from textgen.generation.decode_loop import compiled_decode_loop, decode_loop, end_after_first
from textgen.generation.samplers import GreedySampler, RandomSampler, TopKSampler
from textgen.network import fused_kernels
from textgen.network.precision import matmul, operand

# ---- lean weights, computed once from the Keras weights (numpy, float64 for the folding) ----


def lean_weights(model):
    """The weights of `model` (a LanguageModel, or anything with its embedding, recurrent stack
    and output layer, such as a captioner) rearranged for the lean step.

    Returns a dict of float32 arrays:
        input_table [V, G*H]: embedding @ kernel_0 + biases, the whole of layer 0's input side;
        recurrent_kernel_0 [H, G*H];
        stacked_kernel_l [in + H, G*H] and stacked_bias_l [G*H] for each upper layer l >= 1;
        output_kernel [H, V], output_bias [V];
        label_table [labels, G*H] for a conditioned model: label_embedding @ Wih, the
        first layer's gains for each label (`textgen.network.conditioning`).

    Gate layouts (G*H columns) are those `gates` expects:
        LSTM: (i, f, o, c), Keras' (i, f, c, o) permuted so the sigmoid gates are contiguous.
        GRU:  (z, r, x_h, h_h): the z and r columns hold x@K + h@R + both biases; the candidate's
              input part x@K_h + b_h and recurrent part h@R_h + rb_h stay apart, because Keras'
              GRU (reset_after=True) multiplies only the recurrent part by r. The zero blocks this
              needs in the stacked kernel cost less than a second matmul per layer.
        RNN:  the H pre-activation columns.
    """
    cell, units = model.cell, model.hidden_size
    embedding = model.embedding.embeddings.numpy().astype(np.float64)
    weights = {}
    for index, layer in enumerate(model.recurrent_stack.recurrent_layers):
        kernel = layer.cell.kernel.numpy().astype(np.float64)
        recurrent_kernel = layer.cell.recurrent_kernel.numpy().astype(np.float64)
        bias = layer.cell.bias.numpy().astype(np.float64)
        if cell == "lstm":
            permutation = fused_kernels.lstm_gate_permutation(units).numpy()
            kernel, recurrent_kernel = kernel[:, permutation], recurrent_kernel[:, permutation]
            input_bias = bias[permutation]
        elif cell == "gru":
            kernel, recurrent_kernel, input_bias = gru_four_blocks(
                kernel, recurrent_kernel, bias, units
            )
        else:
            input_bias = bias
        if index == 0:
            rows = model.embedding_size
            weights["input_table"] = embedding @ kernel[:rows] + input_bias
            # Rows [rows:] of layer 0's kernel are Wih. A captioner (no `labels`; its edge export
            # runs this step after the first word) feeds its image through them at the first
            # step only, so its lean weights leave them out.
            if getattr(model, "labels", None):
                label_embedding = model.label_embedding.embeddings.numpy().astype(np.float64)
                weights["label_table"] = label_embedding @ kernel[rows:]
            weights["recurrent_kernel_0"] = recurrent_kernel
        else:
            weights[f"stacked_kernel_{index}"] = np.concatenate([kernel, recurrent_kernel], axis=0)
            weights[f"stacked_bias_{index}"] = input_bias
    weights["output_kernel"] = model.output_layer.kernel.numpy()
    weights["output_bias"] = model.output_layer.bias.numpy()
    return {name: np.asarray(value, np.float32) for name, value in weights.items()}


def gru_four_blocks(kernel, recurrent_kernel, bias, units):
    """Keras GRU weights (z, r, h columns; bias rows input, recurrent) -> the (z, r, x_h, h_h)
    layout.

    Returns (kernel [in, 4H], recurrent_kernel [H, 4H], bias [4H]) such that
    x @ kernel + h @ recurrent_kernel + bias
        = [x@K_zr + h@R_zr + b_zr + rb_zr, x@K_h + b_h, h@R_h + rb_h].
    """
    two = 2 * units
    input_bias, recurrent_bias = bias[0], bias[1]
    zeros_in = np.zeros((kernel.shape[0], units))
    zeros_h = np.zeros((recurrent_kernel.shape[0], units))
    four_kernel = np.concatenate([kernel[:, :two], kernel[:, two:], zeros_in], axis=1)
    four_recurrent = np.concatenate(
        [recurrent_kernel[:, :two], zeros_h, recurrent_kernel[:, two:]], axis=1
    )
    four_bias = np.concatenate(
        [input_bias[:two] + recurrent_bias[:two], input_bias[two:], recurrent_bias[two:]]
    )
    return four_kernel, four_recurrent, four_bias


# ---- the cell math on fused pre-activations z [B, G*H] ----
# (as fused_rnn's steps, after the matmul)


def lstm_gates(z, states, units):
    """fused_kernels.lstm_step: z in (i, f, o, c) order; states [h, c] -> [h, c].

    The three sigmoids are taken as 0.5 + 0.5 tanh(z / 2), so that one tanh over all four gates
    does the step's transcendental work but the cell's: under XLA on a CPU that is about 5% of a
    64-stream generation step less than separate sigmoid and tanh passes (bench/README.md). It
    agrees with the sigmoid to a few float32 ulps.
    """
    scale = tf.constant(np.r_[np.full(3 * units, 0.5), np.ones(units)], tf.float32)
    activated = tf.tanh(z * scale)
    sigmoid_part, candidate = tf.split(activated, [3 * units, units], axis=1)
    input_gate, forget_gate, output_gate = tf.split(0.5 * sigmoid_part + 0.5, 3, axis=1)
    c = forget_gate * states[1] + input_gate * candidate
    return [output_gate * tf.tanh(c), c]


def gru_gates(z, states, units):
    """fused_kernels.gru_step: z in (z, r, x_h, h_h) order; states [h] -> [h]."""
    update_reset, input_part, recurrent_part = tf.split(z, [2 * units, units, units], axis=1)
    update, reset = tf.split(tf.sigmoid(update_reset), 2, axis=1)
    candidate = tf.tanh(input_part + reset * recurrent_part)
    return [update * states[0] + (1 - update) * candidate]


def rnn_gates(z, states, units):
    """fused_kernels.simple_rnn_step: states [h] -> [h]."""
    return [tf.tanh(z)]


GATE_FUNCTIONS = {"lstm": lstm_gates, "gru": gru_gates, "rnn": rnn_gates}


# ---- the lean model: plain functions of the weight tensors, traced into the SavedModel ----


class LeanLanguageModel:
    """The generation-time model on `lean_weights` tensors: a sequence call to prime, a lean step.

    A conditioned model (`weights` has a label_table) carries one more state after the
    recurrent ones: Wih v of each row's label [B, G*H] (`label_states`), which the first layer
    adds at every step, or with `end_of_document` only at the steps that feed that token
    (--label-injection document-start). It rides along the states, so every decoding loop
    carries it unchanged.

    Args:
        weights: dict of tensors, as `lean_weights` returns (read once per traced call, so the
            loop body captures plain tensors, not variable reads).
        cell, num_layers, units: the architecture.
        xla: compile the generation loop with XLA (see `generate_ids`).
        xla_max_streams: with `xla`, batches of at least this many streams take the graph loop
            instead (an int or an int32 scalar tensor; None: XLA at every batch size). XLA's CPU
            matmuls are not oneDNN's, so where the step's matmuls dominate, at many streams,
            the graph loop can be faster: `textgen.generation.loop_choice` measures where.
        precision: the graph loop's matmuls: "float32", "bfloat16", or a function returning a
            scalar bool tensor, called where the graph loop runs (bfloat16 where true: a
            SavedModel decides on the machine it runs on). The XLA loop
            always runs in float32: XLA's CPU backend has no fast bfloat16 product (0.91-0.94x
            its float32 rate on an AVX512_BF16/AMX Xeon, bench/README.md), while oneDNN's runs
            at 1.7x at 64 streams. Priming stays float32.
    """

    def __init__(
        self,
        weights,
        cell,
        num_layers,
        units,
        xla=True,
        xla_max_streams=None,
        end_of_document=None,
        precision="float32",
    ):
        self.weights = weights
        self.precision = precision
        self.conditioned = "label_table" in weights
        self.end_of_document = end_of_document
        self.xla = xla
        self.xla_max_streams = xla_max_streams
        self.cell = cell
        self.num_layers = num_layers
        self.units = units
        self.states_per_layer = 2 if cell == "lstm" else 1
        self.gates = GATE_FUNCTIONS[cell]

    def initial_states(self, batch_size, labels=None):
        """Zero recurrent states; for a conditioned model also the label state of `labels`
        (int32 [B] label ids; None: <none>, id 0)."""
        states = [
            tf.zeros([batch_size, self.units])
            for _ in range(self.num_layers * self.states_per_layer)
        ]
        if self.conditioned:
            if labels is None:
                labels = tf.zeros([batch_size], tf.int32)
            states.append(tf.gather(self.weights["label_table"], labels))
        return states

    def split_label_state(self, states):
        """(recurrent states, the label state or None)."""
        if self.conditioned:
            return list(states[:-1]), states[-1]
        return list(states), None

    def label_gain(self, token_ids, label_state):
        """What the label adds to layer 0's pre-activations for token_ids [...] fed."""
        if self.end_of_document is None:
            return label_state
        acts = tf.cast(tf.equal(token_ids, self.end_of_document), label_state.dtype)
        return label_state * acts[..., None]

    def layer_states(self, states, index):
        n = self.states_per_layer
        return list(states[index * n : (index + 1) * n])

    def recurrent_kernel(self, index):
        if index == 0:
            return self.weights["recurrent_kernel_0"]
        return self.weights[f"stacked_kernel_{index}"][self.units :]

    def matmul_weights(self, precision):
        """The step's matmul weights as operands in `precision`: cast once per call, outside the
        loop, so a bfloat16 step casts only its activations."""
        names = ["recurrent_kernel_0", "output_kernel"]
        names += [f"stacked_kernel_{index}" for index in range(1, self.num_layers)]
        return {name: operand(self.weights[name], precision) for name in names}

    def step(self, token_ids, states, precision="float32", kernels=None):
        """token_ids [B] -> (logits [B, V], new states): one gather, one matmul per layer, the
        matmuls in `precision` on `kernels` (`matmul_weights`; None: the float32 weights)."""
        w = self.weights
        k = w if kernels is None else kernels
        states, label_state = self.split_label_state(states)
        new_states = []
        x = None
        for index in range(self.num_layers):
            layer_states = self.layer_states(states, index)
            h = layer_states[0]
            if index == 0:
                z = tf.gather(w["input_table"], token_ids) + matmul(
                    h, k["recurrent_kernel_0"], precision
                )
                if label_state is not None:
                    z += self.label_gain(token_ids, label_state)
            else:
                z = tf.nn.bias_add(
                    matmul(tf.concat([x, h], axis=1), k[f"stacked_kernel_{index}"], precision),
                    w[f"stacked_bias_{index}"],
                )
            layer_states = self.gates(z, layer_states, self.units)
            new_states.extend(layer_states)
            x = layer_states[0]
        if label_state is not None:
            new_states.append(label_state)
        logits = matmul(x, k["output_kernel"], precision)
        return tf.nn.bias_add(logits, w["output_bias"]), new_states

    def prime(self, token_ids, states):
        """Runs the whole of token_ids [B, T] through the stack in one sequence call; returns the
        new states. Each layer is one input-projection matmul for all T steps, then the
        recurrence (fused_rnn's sequence kernels). T is 0 for a one-character prompt: the
        sequence kernels cannot stack an empty output of unknown batch size, so that case keeps
        the states as they are."""
        return tf.cond(
            tf.shape(token_ids)[1] > 0, lambda: self._prime(token_ids, states), lambda: list(states)
        )

    def _prime(self, token_ids, states):
        w = self.weights
        states, label_state = self.split_label_state(states)
        steps, batch = tf.shape(token_ids)[1], tf.shape(token_ids)[0]
        x_proj = tf.gather(w["input_table"], tf.transpose(token_ids))  # time-major [T, B, G*H]
        if label_state is not None:
            x_proj += self.label_gain(tf.transpose(token_ids), label_state[None])
        new_states = []
        x = None  # the previous layer's outputs, set at the end of each iteration
        for index in range(self.num_layers):
            layer_states = self.layer_states(states, index)
            if index > 0:
                kernel = w[f"stacked_kernel_{index}"][: self.units]
                flat = (
                    tf.matmul(tf.reshape(x, [-1, self.units]), kernel) + w[f"stacked_bias_{index}"]
                )
                x_proj = tf.reshape(flat, [steps, batch, -1])
            recurrent_kernel = self.recurrent_kernel(index)
            if self.cell == "lstm":
                x, h, c = fused_kernels.lstm_sequence(
                    x_proj, layer_states[0], layer_states[1], recurrent_kernel
                )
                layer_states = [h, c]
            else:

                def one_step(x_t, h, recurrent_kernel=recurrent_kernel):
                    return self.gates(x_t + tf.matmul(h, recurrent_kernel), [h], self.units)[0]

                x, h = fused_kernels.scan_sequence(one_step, x_proj, layer_states[0])
                layer_states = [h]
            new_states.extend(layer_states)
        if label_state is not None:
            new_states.append(label_state)
        return new_states

    def generate_ids(
        self,
        prime_ids,
        num_new,
        temperature,
        top_k,
        seed,
        forbidden=None,
        end_token=None,
        labels=None,
    ):
        """prime_ids [B, T] -> num_new new token ids [B, num_new]: primes with all but the last
        prime token in one sequence call, then samples one token per step from the last one.

        temperature 0 is argmax, top_k 0 no cut; step t draws with the seed (seed, t). With
        `end_token` (an id), generation stops once every row has produced it, and each row is
        `end_token` after its first one; the tokens before it are those without it.

        With `xla` (the default), the loop is textgen's `compiled_decode_loop`: step, sampler and
        loop compiled together, 64 steps per XLA call, about twice as fast as a graph loop around
        an XLA-compiled step for one stream (bench/generate_speed.py), since in an ordinary loop
        every small op costs the graph executor a few microseconds per character. Without it,
        `decode_loop`: the same argmax text; random draws from TensorFlow's CPU kernels instead of
        XLA's, so a seeded sample differs from the XLA one. `labels` (int32 [B]) are the rows'
        label ids for a conditioned model.
        """
        states = self.prime(prime_ids[:, :-1], self.initial_states(tf.shape(prime_ids)[0], labels))
        seed_pair = tf.stack([seed, 0])

        def compiled(sampler):
            return compiled_decode_loop(
                self.step,
                prime_ids[:, -1],
                states,
                num_new,
                sampler,
                seed_pair,
                forbidden,
                end_token=end_token,
            )

        def graph_loop(sampler, precision):
            if precision == "float32":
                step = self.step
            else:
                kernels = self.matmul_weights(precision)

                def step(token_ids, states):
                    return self.step(token_ids, states, precision, kernels)

            tokens = decode_loop(
                step,
                prime_ids[:, -1],
                states,
                num_new,
                sampler,
                seed_pair,
                forbidden,
                end_token=end_token,
            )[0]
            # A loop that stopped early leaves zeros after its last step: the end token there.
            return tokens if end_token is None else end_after_first(tokens, end_token)

        def graph(sampler):
            if isinstance(self.precision, str):
                return graph_loop(sampler, self.precision)
            return tf.cond(
                self.precision(),
                lambda: graph_loop(sampler, "bfloat16"),
                lambda: graph_loop(sampler, "float32"),
            )

        def run(sampler):
            if not self.xla:
                return graph(sampler)
            if self.xla_max_streams is None:
                return compiled(sampler)
            return tf.cond(
                tf.shape(prime_ids)[0] < self.xla_max_streams,
                lambda: compiled(sampler),
                lambda: graph(sampler),
            )

        return tf.case(
            [
                (tf.equal(temperature, 0.0), lambda: run(GreedySampler())),
                (top_k > 0, lambda: run(TopKSampler(top_k, temperature))),
            ],
            default=lambda: run(RandomSampler(temperature)),
        )
