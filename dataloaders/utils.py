"""Palettes (from the dataset declarations) and colourisation of label maps."""
import numpy as np
import torch

from .datasets import get_dataset
from .transforms import MEAN, STD


def voc_palette(n=256):
    """The Pascal VOC colour map (bit-interleaved), as an (n, 3) uint8 array; 255 is (224, 224, 192)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def get_palette(dataset):
    """A (256, 3) uint8 palette for ``dataset``: its declared colours (unused entries, void included, black),
    or the VOC colour map."""
    colors = get_dataset(dataset).colors
    if colors is None:
        return voc_palette()
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[: len(colors)] = colors
    return pal


def decode_segmap(label, dataset="pascal"):
    """H x W class indices (numpy or tensor) -> H x W x 3 uint8 colours."""
    label = label.cpu().numpy() if torch.is_tensor(label) else np.asarray(label)
    return get_palette(dataset)[label.astype(np.int64).clip(0, 255)]


def decode_seg_map_sequence(labels, dataset="pascal"):
    """B x H x W labels -> B x 3 x H x W float tensor in [0, 1] (for make_grid / tensorboard)."""
    return torch.from_numpy(np.stack([decode_segmap(lab, dataset) for lab in labels])).permute(0, 3, 1, 2).float() / 255


def denormalize(images):
    """Undo the ImageNet normalisation of ``transforms.normalize``: B x 3 x H x W -> values in [0, 1]."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
