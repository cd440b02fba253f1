"""The dataset registry: every dataset is declared once, where its reader is, with ``@register_dataset``.

A declaration holds everything the rest of the code asks about a dataset: its reader, class names,
colours, the fill value of padded train masks, the reference's default epochs and lr, and extra reader
options (Pascal's ``use_sbd``).  Its root comes from ``mypath.py`` (``Path.ROOTS[name]``) or the
environment variable ``ATTNFD_<NAME>_ROOT``.
"""
from collections.abc import Callable
from dataclasses import dataclass

from .base import DatasetError

DATASETS = {}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    build: Callable            # (root, split, transform, **options) -> SegmentationDataset
    classes: tuple | Callable  # class names, or a function root -> class names (VOC layout: classes.txt)
    colors: tuple | None       # an RGB triple per class; None: the Pascal VOC colour map
    mask_fill: int             # pad value of train masks (reference: 0 for Pascal, 255 for Cityscapes)
    epochs: int                # default --epochs
    lr: float                  # default --lr for a batch of 6 (scaled by --batch-size / 6)
    options: tuple = ()        # names of the extra keyword options ``build`` takes

    def class_names(self, root):
        return tuple(self.classes(root) if callable(self.classes) else self.classes)


def register_dataset(name, **declaration):
    """Decorator of a reader ``(root, split, transform, **options) -> SegmentationDataset``: registers it as
    dataset ``name`` with the fields of :class:`DatasetSpec`."""
    def register(build):
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = DatasetSpec(name, build, **declaration)
        return build
    return register


def get_dataset(name):
    if name not in DATASETS:
        raise DatasetError(f"--dataset {name!r} is not supported; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]
