"""FeatureCache: pooled backbone features on disk, one `.npy` per image (no pickle).

Layout: ROOT/<backbone>-<weights key>-<image size>px/<image id>.npy, float32 [feature size].
The weights key is "imagenet", "file-<sha256 of the weights file>" or, for random weights,
"none-<hash of their values>" (see `ImageEncoder.weights_key`), so features of different weights
never mix. Entries are keyed by image id: share one ROOT only between runs on the same data set
(COCO ids are unique across COCO's splits, and so are a shapes data set's).
Each file is written to a temporary name and renamed, so an interrupted run leaves no half file
(there is no fsync: after a power cut an entry may be empty, which `load` treats as missing).
"""

import os

import numpy as np


class FeatureCache:
    def __init__(self, root, backbone, weights_key, image_size):
        self.root = os.fspath(root)
        self.directory = os.path.join(self.root, f"{backbone}-{weights_key}-{int(image_size)}px")

    def path(self, image_id):
        return os.path.join(self.directory, f"{image_id}.npy")

    def load(self, image_id):
        """The cached vector, or None (also for an unreadable file, which is then recomputed)."""
        try:
            return np.load(self.path(image_id), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def save(self, image_id, vector):
        os.makedirs(self.directory, exist_ok=True)
        vector = np.asarray(vector, np.float32)
        path = self.path(image_id)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as f:
            np.save(f, vector, allow_pickle=False)
        os.replace(temporary, path)
