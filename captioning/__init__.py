"""CNN + RNN image captioning on textgen's recurrent stack, vocabulary and run directories.

Data: `shapes` (synthetic data set), `scene_parser` (grading), `captions` (tokens, vocabulary),
`images` (Pillow loading), `coco_data` (COCO / Karpathy caption files).
Model and training: `captioner.Captioner`, `image_encoder.ImageEncoder`, `small_cnn.SmallCNN`,
`losses`, `caption_data` (tf.data pipeline), `feature_cache`, `trainer` and the
`python -m captioning.train` CLI, `greedy.caption_images`, `evaluate` (correctness, BLEU-4, CIDEr).

Nothing is imported here, so `python -m captioning.shapes` does not pay for the model code.
"""
