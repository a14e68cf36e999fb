"""The corpus: reading text files in any codec (`reading`), tokenizers (`tokenizers`), the
vocabulary (`vocabulary`), preparing a corpus into token ids (`preparation`), opening and
memory-mapping a prepared one (`prepared_corpus`), and the layout of the ids as B contiguous
streams for stateful truncated BPTT (`stream_batches`).

Nothing here imports TensorFlow at module level: `textgen.prepare` stays quick to start.
"""
