"""The network: `LanguageModel` (embedding, recurrent stack, softmax; it owns encode, decode,
sample, stream and score), `RecurrentStack`, the lean generation-time model
(`lean_language_model`), the fused TensorFlow-op kernels (`fused_kernels`), the C++ LSTM ops
(`native_ops`, `lstm_recurrence.cc`) and the measured choice between them (`kernel_choice`).
"""

# Its modules import TensorFlow: quietly, and with oneDNN on (textgen._quiet_import).
from textgen._quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()
