"""Training a captioner on textgen's `TrainingLoop`: `CaptionTrainer`, the masked loss
(`losses`) and self-critical sequence training (`self_critical`).
"""

# Its modules import TensorFlow: quietly, and with oneDNN on (textgen._quiet_import).
from textgen._quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()
