"""Using a trained captioner: one interface over run directories and SavedModels (`loading`),
batched decoding (`decoding`), the exported SavedModel (`saved_model`) and the HTML gallery
(`gallery`).

TensorFlow is imported where a model is loaded, not here, so that a CLI's quick checks answer
at once.
"""
