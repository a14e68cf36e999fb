"""Imports TensorFlow and Keras without their start-up chatter on stderr.

TensorFlow's C++ runtime prints CUDA and CPU-feature notices straight to file descriptor 2 when
it loads and when it first looks for devices, before any Python logging setting applies. A CLI
whose bad-input errors must be one clear line cannot have those in front, so the import runs with
fd 2 pointed at a temporary file, which is replayed if the import fails.

It also turns on TensorFlow's oneDNN CPU kernels (`TF_ENABLE_ONEDNN_OPTS=1`) unless the user set
that variable. TensorFlow enables them by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on
an AVX2-only CPU it falls back to Eigen, whose kernels train both models' steps (the small
encoder's convolutions, the recurrent matmuls) markedly slower; bench/README.md has the figures.
The variable is read when TensorFlow loads, so it only applies when textgen is imported before
TensorFlow (as the CLIs do); the results differ from Eigen's only by float rounding.

TensorFlow's C++ log level defaults to 3 (fatal only): with oneDNN on, its first int32 op logs an
"error" that oneDNN falls back to Eigen for int32 on CPUs without AVX-512, which is harmless and
would break the one-line output of the CLIs; real failures still reach Python as exceptions.
Set TF_CPP_MIN_LOG_LEVEL yourself to see TensorFlow's log.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def import_tensorflow_quietly():
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
