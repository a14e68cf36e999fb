"""Generation: the samplers (`samplers`), the one decoding loop (`decode_loop`) and beam search
(`beam_search`), streaming (`streaming_generator`), scoring a text (`log_probability`), the
choice between the XLA and graph loops (`loop_choice`) and the exported SavedModel
(`saved_model`).
"""

# Its modules import TensorFlow: quietly, and with oneDNN on (textgen._quiet_import).
from textgen._quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()
