"""Edge exports: a model's single step for phones and other runtimes, beside the SavedModel.

`python -m textgen.export RUN_DIR OUT_DIR --tflite --onnx` (and captioning.export) write
OUT_DIR/edge/: the step as a LiteRT flatbuffer (.tflite; TensorFlow's converter writes it,
ai-edge-litert's interpreter runs it) and as ONNX (tf2onnx converts, onnxruntime runs), every
recurrent state an explicit input and output, and model.json, what an app needs to decode
without this project.

`step_module` (the step as a graph of int32 and float32 tensors only), `tflite_export` and
`onnx_export` (one conversion each), `verify` (each converted file is run once and must compute
what TensorFlow computes), `language_model` (the text model's edge folder).
`captioning.inference.edge_export` builds the captioner's on the same parts. Whether the
packages are installed is checked before TensorFlow loads, by `textgen.extras`.
"""

# Its modules import TensorFlow: quietly, and with oneDNN on (textgen._quiet_import).
from textgen._quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()

EDGE_DIRECTORY = "edge"  # the subfolder of OUT_DIR
