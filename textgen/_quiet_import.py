"""Imports TensorFlow and Keras without their start-up chatter on stderr.

TensorFlow's C++ runtime prints CUDA and CPU-feature notices straight to file descriptor 2 when
it loads and when it first looks for devices, before any Python logging setting applies. A CLI
whose bad-input errors must be one clear line cannot have those in front, so the import runs with
fd 2 pointed at a temporary file, which is replayed if the import fails.
"""

import os
import sys
import tempfile


def import_tensorflow_quietly():
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): import normally
        import keras  # noqa: F401
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe; logical devices stay configurable
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
