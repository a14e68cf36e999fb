"""TensorBoardLog: the TensorBoard event files of a run, in RUN/logs (`tensorboard --logdir runs/`).

Written with `tf.summary` file writers, since the training loop is our own and not `fit`:
scalars per step (training loss, learning rate, throughput) and per evaluation (validation nats,
bits per character, perplexity), text (textgen's periodic samples) and images (captioning's
validation images, their greedy captions beside them as text).

TensorFlow 2.21's `tf.summary.scalar`, `text` and `image` are TensorBoard's code and fail unless
the `tensorboard` package is installed; training should not need the viewer. So the summaries
are written with `tf.summary.write`, which is TensorFlow's own, tagged with the plugin name that
TensorBoard's scalar, text and image dashboards read (the whole of their metadata, as TensorBoard
2.21 writes it) and holding the tensors they expect: a float32 scalar, a string, and for images
[width, height, PNG, PNG, ...]. tests/test_tensorboard.py reads them back with TensorBoard's own
event loader where it is installed (`pip install '.[tensorboard]'`, which the viewer needs).

Resume: TensorBoard has no way to say "the steps after N of this run are void". It shows every
event a directory holds, so events a killed run wrote after its last checkpoint would appear
twice once the resumed run writes those steps again. So a resume first rewrites the directory's
event files into one that holds only the events up to the checkpoint's step (`compact`; the
events, their wall times included, are copied record by record, as TFRecords, which is what an
event file is) and then opens a fresh writer, whose file sorts after it, with the first summary
it writes (so resuming a finished run writes nothing). Events are flushed
before every checkpoint (`flush`), so the files always reach at least the checkpoint's step.
"""

import glob
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tensorflow.core.util import event_pb2

DIRECTORY = "logs"
PATTERN = "events.out.tfevents.*"


def plugin_metadata(plugin_name):
    """The SummaryMetadata of TensorBoard's `plugin_name` dashboard: "scalars", "text", "images"."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    return metadata


def event_files(directory):
    """The event files of a log directory, oldest first (their names start with the time)."""
    return sorted(glob.glob(os.path.join(os.fspath(directory), PATTERN)))


def read_events(path):
    """(the Event protos of one file, whether it ends in a torn record: a killed writer's)."""
    read = []
    try:
        for record in tf.data.TFRecordDataset(path):
            read.append(event_pb2.Event.FromString(record.numpy()))
    except tf.errors.DataLossError:
        return read, True
    return read, False


def compact(directory, last_step):
    """Rewrites the event files of `directory` as one file, its first one's name, without the
    events of steps after `last_step` and without a torn last record. Nothing changes when
    there is nothing to drop (several files then stay several: TensorBoard reads them in
    order)."""
    files = event_files(directory)
    kept, dropped = [], False
    for index, path in enumerate(files):
        read, torn = read_events(path)
        dropped = dropped or torn
        for number, event in enumerate(read):
            if event.HasField("summary") and event.step > last_step:
                dropped = True
            elif event.HasField("summary") or (index == 0 and number == 0):
                kept.append(event.SerializeToString())  # the file-version record heads file 1
    if not dropped:
        return
    # Not named like an event file until complete, so that TensorBoard never reads half of it.
    temporary = os.path.join(os.fspath(directory), ".compacting")
    with tf.io.TFRecordWriter(temporary) as writer:
        for record in kept:
            writer.write(record)
    os.replace(temporary, files[0])
    for path in files[1:]:
        os.remove(path)


class TensorBoardLog:
    """The writer of one run's RUN/logs. `write` False (a worker other than the chief) makes
    every method a no-op, so that only the chief writes."""

    def __init__(self, run_directory, write=True):
        self.directory = os.path.join(os.fspath(run_directory), DIRECTORY)
        self.write = write
        self._opened = False
        self._writer = None
        self._write_scalars = None

    def open(self, resume_step=None):
        """Readies the log, after `compact` when resuming from `resume_step`. The writer, and
        so its new event file, comes with the first summary: resuming a finished run writes
        nothing. Call it once TensorFlow may run ops (textgen's trainer sets its threads before
        the first one)."""
        if self.write:
            if resume_step is not None and os.path.isdir(self.directory):
                compact(self.directory, resume_step)
            self._opened = True
        return self

    def _default(self, step):
        """The writer as the default one at `step`, or None when this log writes nothing."""
        if not self._opened:
            return None
        if self._writer is None:
            os.makedirs(self.directory, exist_ok=True)
            self._writer = tf.summary.create_file_writer(self.directory)
        return self._writer.as_default(step=step)

    def scalars(self, step, values):
        """{tag: number} at `step`; None values are left out. One traced call writes them all
        (per set of tags): eager summary ops cost about 1 ms each, five times the traced ones,
        and a training step writes three."""
        present = {tag: float(value) for tag, value in values.items() if value is not None}
        if not present or self._default(step) is None:
            return
        if self._write_scalars is None:
            writer, metadata = self._writer, plugin_metadata("scalars")

            def write_scalars(step, values, tags):
                with writer.as_default(step=step):
                    for index, tag in enumerate(tags):
                        tf.summary.write(tag, values[index], metadata=metadata)

            self._write_scalars = tf.function(write_scalars, autograph=False)
        self._write_scalars(
            tf.constant(step, tf.int64),
            tf.constant(list(present.values()), tf.float32),
            tuple(present),
        )

    def text(self, step, tag, text):
        default = self._default(step)
        if default is None:
            return
        with default:
            # TensorBoard renders text as Markdown; a code block keeps a sample's line breaks.
            self._text(tag, "```\n" + text.replace("```", "` ` `") + "\n```")

    def images(self, step, tag, images, captions):
        """uint8 images [N, H, W, 3] as one image summary of N, and their captions as text:
        a Markdown list in the images' order."""
        default = self._default(step)
        if default is None:
            return
        images = np.asarray(images, np.uint8)
        height, width = images.shape[1:3]
        encoded = [tf.io.encode_png(image) for image in images]
        tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height))] + encoded)
        with default:
            tf.summary.write(tag, tensor, metadata=plugin_metadata("images"))
            listed = "\n".join(f"{i + 1}. {caption}" for i, caption in enumerate(captions))
            self._text(tag + "_captions", listed)

    def _text(self, tag, text):
        tf.summary.write(tag, tf.constant(text), metadata=plugin_metadata("text"))

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._opened, self._write_scalars = False, None
