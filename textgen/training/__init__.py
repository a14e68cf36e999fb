"""Training: the one loop of both trainers (`loop`) and its state (`progress`), the language
model's trainer (`text_trainer`), the run directory (`run_directory`), tf.distribute
(`distribution`), Ctrl-C and SIGTERM (`stop_request`), the loss units (`loss_units`), the
metrics log (`metrics_log`) and TensorBoard (`tensorboard_log`).
"""

# Its modules import TensorFlow: quietly, and with oneDNN on (textgen._quiet_import).
from textgen._quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()
