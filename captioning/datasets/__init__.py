"""Caption data: images read with Pillow (`images`), caption tokens and vocabulary (`tokens`),
tf.data batches (`batches`) and cached backbone features (`feature_cache`). The synthetic
shapes scenes and COCO files have their own command-line modules at the top of `captioning`.
"""
