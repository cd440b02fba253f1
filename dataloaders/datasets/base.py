"""A segmentation dataset over (image file, label file) pairs, with errors that name the file."""
import os
import random
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..images import InputError, read_rgb, upright

IGNORE_INDEX = 255


class DatasetError(InputError):
    """Bad dataset input; the message names the file and the fix."""


def require_dir(path, what, hint):
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found: {path} ({hint})")


def read_list(path, what, hint):
    if not os.path.isfile(path):
        raise DatasetError(f"{what} split list not found: {path} ({hint})")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_label(path):
    """Class indices from a palette/greyscale PNG (as shown: EXIF orientation applied), or an SBD ``cls/*.mat``
    (GTcls.Segmentation)."""
    try:
        if path.endswith(".mat"):
            import scipy.io  # SBD only: inference never needs scipy

            return np.asarray(scipy.io.loadmat(path)["GTcls"][0]["Segmentation"][0]).astype(np.uint8)
        with Image.open(path) as stored:
            im = upright(stored)
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(f"label {path} is a {im.mode} image; expected a palette or greyscale PNG of "
                                   f"class indices")
            return np.array(im)
    except FileNotFoundError:
        raise DatasetError(f"label listed but absent: {path} (restore it or remove it from the split list)") from None
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"unreadable label {path}: {e} (re-extract the dataset or drop the file)") from None


class SegmentationDataset(Dataset):
    """Samples ``{'image': float 3xHxW, 'label': int64 HxW}`` with labels in [0, C) or 255.

    ``label_map`` (a 256-entry lookup table) converts raw label values to train ids; values that
    are still outside [0, C) and not 255 are mapped to 255 with a warning naming the file.
    """

    def __init__(self, pairs, num_classes, transform, label_map=None, name="dataset"):
        self.pairs = list(pairs)
        self.num_classes = self.NUM_CLASSES = num_classes
        self.transform = transform
        self.label_map = label_map
        self.name = name
        self._warned = set()
        for image, label in self.pairs:
            for path, kind in ((image, "image"), (label, "label")):
                if not os.path.isfile(path):
                    raise DatasetError(f"{kind} listed but absent: {path} "
                                       f"(restore it or remove it from the split list)")
        if not self.pairs:
            raise DatasetError(f"{name}: the split is empty (check the split list)")

    def __len__(self):
        return len(self.pairs)

    def load(self, index):
        """The raw (H x W x 3 uint8 image, H x W uint8 label in [0, C) or 255) of sample ``index``."""
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path, "re-extract the dataset or drop the file", DatasetError)
        label = read_label(label_path)
        if image.shape[:2] != label.shape[:2]:
            raise DatasetError(f"label {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
                               f"{image.shape[1]}x{image.shape[0]} (W x H); they must match")
        if self.label_map is not None:
            label = self.label_map[np.clip(label, 0, 255).astype(np.uint8)]
        bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            if label_path not in self._warned:
                self._warned.add(label_path)
                warnings.warn(f"{label_path}: label values {sorted(np.unique(label[bad]).tolist())[:8]} are outside "
                              f"[0, {self.num_classes}) and not 255; they are ignored (mapped to 255)", stacklevel=2)
            label = np.where(bad, IGNORE_INDEX, label)
        return image, label.astype(np.uint8)

    def __getitem__(self, index):
        """``index``, or ``(seed, index)`` from :class:`dataloaders.ResumableSampler`: the random transform
        then draws from a generator seeded by that pair alone, so a sample's augmentation depends on
        (run seed, epoch, index) and not on which worker made it or how often workers restarted (what
        makes a resumed run repeat the interrupted one exactly)."""
        seed = None
        if isinstance(index, (tuple, list)):
            seed, index = index
        image, label = self.load(index)
        image, label = torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(
            np.ascontiguousarray(label))
        if seed is None:
            image, label = self.transform(image, label)
        else:
            state = random.getstate()  # the transforms draw from torch and from Python's random
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                image, label = self.transform(image, label)
            random.setstate(state)
        return {"image": image, "label": label}
