"""Pascal VOC 2012 (+ SBD) in the layouts they ship in; the synthetic dataset uses the VOC layout.

VOC:  <root>/JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNG, 255 = void),
      ImageSets/Segmentation/{train,val}.txt                       (root = VOCdevkit/VOC2012)
SBD:  <root>/dataset/{img/<id>.jpg, cls/<id>.mat, train.txt, val.txt}  (root = benchmark_RELEASE;
      a root that is the ``dataset`` folder itself is accepted too)
"""
import os

from mypath import Path

from .base import IGNORE_INDEX, DatasetError, SegmentationDataset, read_list, require_dir
from .registry import register_dataset

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
HINT = "edit mypath.py or set ATTNFD_{}_ROOT"
MAX_CLASSES = IGNORE_INDEX  # ids 0..254


def voc_ids(root, split, name="pascal"):
    require_dir(root, f"{name} root", HINT.format(name.upper()))
    return read_list(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), name,
                     "the VOC layout needs ImageSets/Segmentation/<split>.txt")


def voc_pairs(root, ids):
    return [(os.path.join(root, "JPEGImages", i + ".jpg"), os.path.join(root, "SegmentationClass", i + ".png"))
            for i in ids]


def sbd_pairs(root, splits=("train", "val")):
    require_dir(root, "SBD root", HINT.format("SBD"))
    base = os.path.join(root, "dataset") if os.path.isdir(os.path.join(root, "dataset")) else root
    pairs = {}
    for split in splits:
        for i in read_list(os.path.join(base, f"{split}.txt"), "SBD", "benchmark_RELEASE/dataset/<split>.txt"):
            pairs[i] = (os.path.join(base, "img", i + ".jpg"), os.path.join(base, "cls", i + ".mat"))
    return pairs


def read_class_names(root, default):
    path = os.path.join(root, "classes.txt")
    if not os.path.isfile(path):
        return default
    names = read_list(path, "classes", "one class name per line")
    if not 2 <= len(names) <= MAX_CLASSES:
        raise DatasetError(f"{path} lists {len(names)} classes; give 2 to {MAX_CLASSES} (8-bit label PNGs hold ids "
                           f"0-255, and 255 marks ignored pixels)")
    return tuple(names)


def find_voc_root(root):
    """Accept VOCdevkit/VOC2012 itself, or a folder above it (torchvision's VOC root)."""
    for candidate in (root, os.path.join(root, "VOC2012"), os.path.join(root, "VOCdevkit", "VOC2012")):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    return root


def voc_class_names(root):
    """``classes.txt`` of the VOC root the dataset reads, else the 21 VOC classes."""
    return read_class_names(find_voc_root(root), VOC_CLASSES)


@register_dataset("pascal", classes=voc_class_names, colors=None, mask_fill=0, epochs=50, lr=0.007,
                  options=("use_sbd",))
def voc_dataset(root, split, transform, use_sbd=False, name="pascal"):
    """VOC ``split``; with ``use_sbd`` the train set is VOC train + SBD train+val minus VOC val (SBD root:
    ``mypath`` ``sbd`` / ATTNFD_SBD_ROOT)."""
    root = find_voc_root(root)
    classes = read_class_names(root, VOC_CLASSES)
    ids = voc_ids(root, split, name)
    pairs = voc_pairs(root, ids)
    if use_sbd and split == "train":
        excluded = set(voc_ids(root, "val", name)) | set(ids)
        pairs += [p for i, p in sbd_pairs(Path.db_root_dir("sbd")).items() if i not in excluded]
    return SegmentationDataset(pairs, len(classes), transform, name=f"{name}:{split}")


@register_dataset("synthetic", classes=voc_class_names, colors=None, mask_fill=0, epochs=10, lr=0.01)
def synthetic_dataset(root, split, transform):
    """The dataset ``python -m dataloaders.synthetic`` writes, in the VOC layout (its classes.txt)."""
    return voc_dataset(root, split, transform, name="synthetic")
