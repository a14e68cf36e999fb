"""The captioner's network: `Captioner` (image encoder, the first-step projection Wih, textgen's
`RecurrentStack`, logits), `ImageEncoder` and `SmallCNN`.
"""

# Its modules import TensorFlow: quietly, and with oneDNN on (textgen._quiet_import).
from textgen._quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()
