"""Cityscapes: <root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png with
gtFine/<split>/<city>/*_gtFine_labelIds.png; the 19 train ids, every other id -> 255."""
import glob
import os

import numpy as np

from .base import DatasetError, SegmentationDataset, require_dir
from .registry import register_dataset

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
VALID_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
LABEL_MAP = np.full(256, 255, dtype=np.uint8)
LABEL_MAP[list(VALID_IDS)] = np.arange(len(VALID_IDS))
COLORS = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
          (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
          (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))


@register_dataset("cityscapes", classes=CITYSCAPES_CLASSES, colors=COLORS, mask_fill=255, epochs=200, lr=0.01)
def cityscapes_dataset(root, split, transform):
    hint = "edit mypath.py or set ATTNFD_CITYSCAPES_ROOT"
    require_dir(root, "cityscapes root", hint)
    image_dir = os.path.join(root, "leftImg8bit", split)
    require_dir(image_dir, f"cityscapes {split} images", "expected leftImg8bit/<split>/<city>/")
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise DatasetError(f"no *_leftImg8bit.png under {image_dir}/<city>/ ({hint})")
    pairs = []
    for image in images:
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
        pairs.append((image, os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png")))
    return SegmentationDataset(pairs, len(CITYSCAPES_CLASSES), transform, label_map=LABEL_MAP,
                               name=f"cityscapes:{split}")
