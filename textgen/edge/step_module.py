"""The recurrent step as a pure function of int32 and float32 tensors: what the edge exports
convert to LiteRT and ONNX.

A Keras LSTM keeps its state in variables when it is stateful, and the converters cannot carry
those (TensorFlow #38312, #58668; keras-onnx #620, tf2onnx #1152). Here every recurrent state is
an explicit input and output, as in the SavedModel's `step` signature, so the converted model is
a function an app calls once per token:

    inputs:  token_ids int32 [B], state_0 ... state_{N-1} float32 [B, hidden]
             (a conditioned language model also label_id int32 [B]: 0 is <none>)
    outputs: logits float32 [B, vocab], new_state_0 ... new_state_{N-1} float32 [B, hidden]

LSTM layers have two states each (h, then c), GRU and RNN layers one; zero states start a text.
The new states are named new_state_i, not state_i as in the SavedModel: an ONNX graph names
every value once, and tf2onnx fails ("graph input 'state_0' not exist") when an output takes an
input's name.

It runs `textgen.network.lean_language_model`'s step, the one the SavedModel's `generate` and
`step` run: layer 0 is one gather from the folded [vocab, gates * hidden] table and one recurrent
matmul, every upper layer one matmul. No XLA, no string ops, no hash tables: LiteRT's builtin
ops and ONNX's standard ones cover it.
"""

import numpy as np
import tensorflow as tf

from textgen.network.lean_language_model import LeanLanguageModel, lean_weights

LABEL_INPUT = "label_id"


def state_layout(cell, num_layers):
    """[(name, layer, kind)] of the recurrent states in order: LSTM h and c per layer, else h."""
    kinds = ("h", "c") if cell == "lstm" else ("h",)
    layout = [(layer, kind) for layer in range(num_layers) for kind in kinds]
    return [(f"state_{i}", layer, kind) for i, (layer, kind) in enumerate(layout)]


class StepModule(tf.Module):
    """`step`, the lean step on `lean_weights` held as variables, for the converters.

    Args:
        weights: dict of float32 arrays as `lean_weights` returns; a `label_table` makes it a
            conditioned step with the `label_id` input (the label's gain is looked up from it,
            as the SavedModel's step looks up its `label`).
        cell, num_layers, units: the architecture.
        end_of_document: the token the label acts at (--label-injection document-start), or
            None: at every step.
    """

    def __init__(self, weights, cell, num_layers, units, end_of_document=None, name="edge_step"):
        super().__init__(name=name)
        self.cell, self.num_layers, self.units = cell, num_layers, units
        self.end_of_document = end_of_document
        self.lean_weights = {
            key: tf.Variable(value, trainable=False, name=key) for key, value in weights.items()
        }
        self.labelled = "label_table" in weights
        self.vocabulary_size = int(weights["output_bias"].shape[0])
        self.state_names = [name for name, _, _ in state_layout(cell, num_layers)]
        self.new_state_names = [f"new_{name}" for name in self.state_names]
        self.step = tf.function(self._step, input_signature=self.input_signature())

    @classmethod
    def from_language_model(cls, model):
        """The step of a textgen LanguageModel (conditioned when it has labels)."""
        return cls(
            lean_weights(model),
            model.cell,
            model.num_layers,
            model.hidden_size,
            model.lean_end_of_document(),
        )

    def input_signature(self):
        specs = [tf.TensorSpec([None], tf.int32, name="token_ids")]
        specs += [tf.TensorSpec([None, self.units], tf.float32, name=n) for n in self.state_names]
        if self.labelled:
            specs.append(tf.TensorSpec([None], tf.int32, name=LABEL_INPUT))
        return specs

    def _step(self, token_ids, *inputs):
        weights = {key: tf.convert_to_tensor(v) for key, v in self.lean_weights.items()}
        lean = LeanLanguageModel(
            weights,
            self.cell,
            self.num_layers,
            self.units,
            xla=False,
            end_of_document=self.end_of_document,
        )
        states = list(inputs[: len(self.state_names)])
        if self.labelled:  # the label state rides after the recurrent ones (LeanLanguageModel)
            states.append(tf.gather(weights["label_table"], inputs[-1]))
        logits, new_states = lean.step(token_ids, states)
        new_states = new_states[: len(self.state_names)]  # not the label state: it never changes
        return {"logits": logits, **dict(zip(self.new_state_names, new_states))}

    def example_inputs(self, batch=2, seed=0):
        """Inputs for checking a converted step against this one: valid ids, states of the
        size real ones have, and label ids when conditioned."""
        rng = np.random.default_rng(seed)
        inputs = {"token_ids": rng.integers(0, self.vocabulary_size, batch).astype(np.int32)}
        for name in self.state_names:
            inputs[name] = rng.uniform(-0.9, 0.9, (batch, self.units)).astype(np.float32)
        if self.labelled:
            labels = int(self.lean_weights["label_table"].shape[0])
            inputs[LABEL_INPUT] = rng.integers(0, labels, batch).astype(np.int32)
        return inputs

    def reference_outputs(self, inputs):
        """What this step returns for `inputs` (numpy arrays by name), as numpy arrays."""
        # The tf.function takes the states as *args: positionally, in the signature's order.
        names = [spec.name for spec in self.step.input_signature]
        outputs = self.step(*[tf.constant(inputs[name]) for name in names])
        return {name: value.numpy() for name, value in outputs.items()}

    def describe(self):
        """The inputs, outputs and states, for model.json."""
        inputs = [tensor("token_ids", "int32", ["batch"])]
        inputs += [tensor(name, "float32", ["batch", self.units]) for name in self.state_names]
        if self.labelled:
            inputs.append(tensor(LABEL_INPUT, "int32", ["batch"]))
        outputs = [tensor("logits", "float32", ["batch", self.vocabulary_size])]
        outputs += [tensor(n, "float32", ["batch", self.units]) for n in self.new_state_names]
        states = [
            {
                "name": name,
                "layer": layer,
                "kind": kind,
                "size": self.units,
                "output": f"new_{name}",
            }
            for name, layer, kind in state_layout(self.cell, self.num_layers)
        ]
        return {"inputs": inputs, "outputs": outputs, "states": states}


def tensor(name, dtype, shape):
    """One input or output as model.json lists it."""
    return {"name": name, "dtype": dtype, "shape": shape}
