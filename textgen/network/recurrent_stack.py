"""RecurrentStack: `num_layers` stock Keras recurrent layers with dropout between them and
explicit states."""

import keras
import tensorflow as tf

from textgen.network import fused_kernels, native_ops
from textgen.network.precision import matmul, operand

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}


@keras.saving.register_keras_serializable(package="textgen")
class RecurrentStack(keras.layers.Layer):
    """Stacked LSTM/GRU/vanilla-RNN layers whose states go in and come out explicitly.

    The weights are those of stock `keras.layers.LSTM`, `GRU` and `SimpleRNN` layers, so a GPU
    runs them through the fused cuDNN kernel. On a CPU the same weights run through the lean
    kernels of `textgen.network.fused_kernels`, which compute the same function faster.

    Explicit states (rather than `stateful=True`) let one set of weights serve the fixed-batch
    training streams, a validation pass with its own streams, and generation at any batch size.

    Args:
        cell: "lstm", "gru" or "rnn" (tanh).
        num_layers: how many recurrent layers are stacked.
        hidden_size: units in each recurrent layer.
        dropout: dropout rate on every layer's output (between layers and before the output
            layer), never on the recurrent connections, so cuDNN stays usable.
        fused: True for the lean kernels, False for the stock layers, None to choose the lean
            kernels when no GPU is visible.
        seed: seed of the dropout masks.
    """

    def __init__(
        self,
        cell="lstm",
        num_layers=2,
        hidden_size=256,
        dropout=0.0,
        fused=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.fused = fused
        self.seed = seed
        # Whether the lean LSTM kernel may run on textgen's C++ ops (where they build). Set by the
        # training loop's kernel measurement (`textgen.network.kernel_choice`), and not saved with
        # the
        # layer: which kernel is fastest is a property of the machine, not of the model.
        self.use_native_ops = True
        # The lean kernels' matmul precision, "float32" or "bfloat16"
        # (`textgen.network.precision`); like `use_native_ops` a property of the run and the
        # machine, not saved: the weights are float32 either way.
        self.precision = "float32"
        self.recurrent_layers = [
            CELLS[cell](hidden_size, return_sequences=True, return_state=True, name=f"{cell}_{i}")
            for i in range(num_layers)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(
                dropout, seed=None if seed is None else seed + i, name=f"dropout_{i}"
            )
            for i in range(num_layers)
        ]

    @property
    def states_per_layer(self):
        return 2 if self.cell == "lstm" else 1

    def build(self, input_shape):
        features = input_shape[-1]
        for layer in self.recurrent_layers:
            layer.build((None, None, features))
            features = self.hidden_size
        for layer in self.dropout_layers:
            layer.build((None, None, self.hidden_size))

    def initial_states(self, batch_size, dtype="float32"):
        """Zero states: a flat list, `states_per_layer` tensors of [batch, hidden_size] per
        layer."""
        return [
            tf.zeros([batch_size, self.hidden_size], dtype)
            for _ in range(self.num_layers * self.states_per_layer)
        ]

    def _use_fused(self):
        if self.fused is not None:
            return self.fused
        return not tf.config.list_logical_devices("GPU")

    def layer_states(self, states, i):
        n = self.states_per_layer
        return list(states[i * n : (i + 1) * n])

    def call(self, inputs, states=None, training=False, embeddings=None):
        """inputs [batch, time, features] -> (outputs [batch, time, hidden_size], new states).

        With `embeddings` [vocabulary, features], inputs are token ids [batch, time] that the
        embedding matrix turns into features. The lean LSTM kernel on textgen's C++ ops then
        looks the first layer's input projection up in `embeddings @ kernel` when the
        vocabulary is smaller than the batch's token count (the same function, fewer FLOPs:
        `fused_kernels.lstm_layer_on_table`); otherwise the ids are embedded first.
        """
        fused = self._use_fused()
        table_ops = self._table_ops(inputs, embeddings) if fused else None
        if embeddings is not None and table_ops is None:
            inputs, embeddings = tf.gather(embeddings, inputs), None
        if states is None:
            dtype = embeddings.dtype if table_ops is not None else inputs.dtype
            states = self.initial_states(tf.shape(inputs)[0], dtype)
        if fused:
            x = tf.transpose(inputs, [1, 0] if table_ops is not None else [1, 0, 2])
        else:
            x = inputs
        new_states = []
        for i, (layer, drop) in enumerate(zip(self.recurrent_layers, self.dropout_layers)):
            layer_states = self.layer_states(states, i)
            if table_ops is not None and i == 0:
                cell = layer.cell
                x, h, c = fused_kernels.lstm_layer_on_table(
                    table_ops,
                    x,
                    tf.matmul(embeddings, cell.kernel),
                    cell.bias,
                    layer_states[0],
                    layer_states[1],
                    cell.recurrent_kernel,
                    self.precision,
                )
                layer_states = [h, c]
            elif fused:
                x, layer_states = self._fused_layer(layer, x, layer_states)
            else:
                x, *layer_states = layer(x, initial_state=layer_states, training=training)
            x = drop(x, training=training)
            new_states.extend(layer_states)
        if fused:
            x = tf.transpose(x, [1, 0, 2])
        return x, new_states

    def _table_ops(self, token_ids, embeddings):
        """The C++ ops when the first layer's input projection should be a table lookup: an LSTM,
        the ops available, and a vocabulary smaller than the token count (both known when the
        graph is traced; a word model's 10,000-word table does not pay for a few thousand
        tokens). None otherwise."""
        if embeddings is None or self.cell != "lstm":
            return None
        tokens = token_ids.shape.num_elements()
        if tokens is None or embeddings.shape[0] is None or embeddings.shape[0] >= tokens:
            return None
        return native_ops.lstm_ops() if self.use_native_ops else None

    def _projection(self, layer, x, precision="float32"):
        """x @ kernel + input bias for all time steps in one matmul; x is [..., features]."""
        cell = layer.cell
        bias = cell.bias[0] if self.cell == "gru" else cell.bias
        shape = tf.shape(x)
        flat = tf.reshape(x, [-1, shape[-1]])
        kernel, bias = cell.kernel, bias
        if self.cell == "lstm":
            perm = fused_kernels.lstm_gate_permutation(self.hidden_size)
            kernel, bias = tf.gather(kernel, perm, axis=1), tf.gather(bias, perm)
        projected = matmul(flat, kernel, precision) + bias
        return tf.reshape(projected, tf.concat([shape[:-1], [-1]], 0))

    def _step_fn(self, layer, precision="float32"):
        cell = layer.cell
        recurrent_kernel = operand(cell.recurrent_kernel, precision)  # cast once, not per step
        if self.cell == "gru":
            return lambda x, h: fused_kernels.gru_step(
                x, h, recurrent_kernel, cell.bias[1], precision
            )
        return lambda x, h: fused_kernels.simple_rnn_step(x, h, recurrent_kernel, precision)

    def _recurrent_kernel(self, layer):
        if self.cell == "lstm":
            perm = fused_kernels.lstm_gate_permutation(self.hidden_size)
            return tf.gather(layer.cell.recurrent_kernel, perm, axis=1)
        return layer.cell.recurrent_kernel

    def _fused_layer(self, layer, x, states):
        if self.cell == "lstm":
            # On the layer's own (Keras-ordered) weights, input projection inside; see
            # fused_kernels.lstm_layer.
            cell = layer.cell
            outputs, h, c = fused_kernels.lstm_layer(
                x,
                states[0],
                states[1],
                cell.kernel,
                cell.recurrent_kernel,
                cell.bias,
                native=self.use_native_ops,
                precision=self.precision,
            )
            return outputs, [h, c]
        x_proj = self._projection(layer, x, self.precision)
        step = self._step_fn(layer, self.precision)
        outputs, h = fused_kernels.scan_sequence(step, x_proj, states[0])
        return outputs, [h]

    def step(self, inputs, states):
        """One time step for generation: inputs [batch, features] -> (top output, new states).
        Dropout is off, as at inference."""
        x = inputs
        new_states = []
        for i, layer in enumerate(self.recurrent_layers):
            layer_states = self.layer_states(states, i)
            x_proj = self._projection(layer, x)
            if self.cell == "lstm":
                h, c = fused_kernels.lstm_step(
                    x_proj, layer_states[0], layer_states[1], self._recurrent_kernel(layer)
                )
                layer_states = [h, c]
            else:
                h = self._step_fn(layer)(x_proj, layer_states[0])
                layer_states = [h]
            new_states.extend(layer_states)
            x = h
        return x, new_states

    def get_config(self):
        config = super().get_config()
        config.update(
            cell=self.cell,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            dropout=self.dropout,
            fused=self.fused,
            seed=self.seed,
        )
        return config
