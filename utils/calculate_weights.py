"""Class-balanced CE weights of the reference: w_c = 1 / ln(1.02 + f_c), f_c the pixel frequency."""
import numpy as np
from tqdm import tqdm


def calculate_weights_labels(dataset, num_classes):
    """Count labels over the raw train masks (no augmentation); the caller caches the weights
    (``training.build.class_weights``)."""
    z = np.zeros(num_classes)
    for i in tqdm(range(len(dataset)), desc="Calculating class weights"):
        _, label = dataset.load(i)
        label = label[label < num_classes]
        z += np.bincount(label.astype(np.int64), minlength=num_classes)[:num_classes]
    return 1 / np.log(1.02 + z / max(z.sum(), 1))
