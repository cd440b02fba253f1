"""Class-balanced CE weights of the reference: w_c = 1 / ln(1.02 + f_c), f_c the pixel frequency."""
import os

import numpy as np
from tqdm import tqdm


def calculate_weights_labels(dataset, num_classes, cache_path=None):
    """Count labels over the raw train masks (no augmentation) once; cache them as .npy."""
    if cache_path and os.path.isfile(cache_path):
        return np.load(cache_path)
    z = np.zeros(num_classes)
    for i in tqdm(range(len(dataset)), desc="Calculating class weights"):
        _, label = dataset.load(i)
        label = label[label < num_classes]
        z += np.bincount(label.astype(np.int64), minlength=num_classes)[:num_classes]
    weights = 1 / np.log(1.02 + z / max(z.sum(), 1))
    if cache_path:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        np.save(cache_path, weights)
    return weights
