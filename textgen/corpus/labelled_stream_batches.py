"""LabelledStreamBatches: StreamBatches whose inputs carry each token's document label, for a
conditioned model."""

import numpy as np

from textgen.corpus.stream_batches import StreamBatches


class LabelledStreamBatches(StreamBatches):
    """The batches of `StreamBatches`, the inputs as joint ids label * vocabulary_size + token
    (`LanguageModel.joint_ids`), so that a conditioned model sees the label of every step's
    document wherever a stream cuts it.

    The label of input position p is that of the document its target p + 1 belongs to: the
    step that feeds a document's end token predicts the next document's first token, under the
    next document's label. `document_offsets` are where each document starts in `ids`,
    `document_labels` their label ids; `label_dropout` of the documents, a fixed choice seeded
    by `seed`, are given <none> (id 0) instead, so that the model learns to generate without a
    label too. Only a batch's labels are looked up, so `ids` may be a memory map of any size.
    """

    def __init__(
        self,
        ids,
        batch_size,
        seq_length,
        remap,
        document_offsets,
        document_labels,
        vocabulary_size,
        label_dropout=0.0,
        seed=0,
    ):
        super().__init__(ids, batch_size, seq_length, remap)
        self.offsets = np.asarray(document_offsets, np.int64)
        labels = np.array(document_labels, np.int64)
        if label_dropout:
            labels[np.random.default_rng(seed).random(len(labels)) < label_dropout] = 0
        self.document_labels = labels
        self.vocabulary_size = int(vocabulary_size)
        self.stream_length = self.inputs.shape[1]

    def labels(self, k):
        """The label ids [batch_size, seq_length] of batch k's input positions."""
        rows = np.arange(self.batch_size)[:, None] * self.stream_length
        columns = k * self.seq_length + np.arange(self.seq_length)[None, :]
        documents = np.searchsorted(self.offsets, rows + columns + 1, side="right") - 1
        return self.document_labels[np.maximum(documents, 0)]

    def __getitem__(self, k):
        inputs, targets = super().__getitem__(k)
        joint = self.labels(k) * self.vocabulary_size + inputs
        return joint.astype(np.int32), targets
