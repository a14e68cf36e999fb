"""CNN + RNN image captioning on textgen's recurrent stack, vocabulary and run directories.

Data: `shapes` (synthetic data set), `scene_parser` (grading), `captions` (tokens, vocabulary),
`images` (Pillow loading), `coco_data` (COCO / Karpathy caption files).
Model and training: `captioner.Captioner`, `image_encoder.ImageEncoder`, `small_cnn.SmallCNN`,
`losses`, `caption_data` (tf.data pipeline), `feature_cache`, `trainer` and the
`python -m captioning.train` CLI.
Using a model: `caption_model` (one interface over run directories and SavedModels), `decoding`
(batched greedy, beam and sampled decoding), `gallery` (HTML page), and the CLIs
`python -m captioning.caption`, `python -m captioning.export` (SavedModel: image bytes in,
caption out) and `python -m captioning.evaluate` (BLEU-1..4, METEOR, ROUGE-L, CIDEr).

Nothing is imported here, so `python -m captioning.shapes` does not pay for the model code.
"""
