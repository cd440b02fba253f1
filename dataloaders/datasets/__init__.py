"""Datasets.  Each module declares its datasets with ``@register_dataset``; importing it below is its
registry line (README "Extend": a new dataset is one module plus one name here)."""
from . import camvid, cityscapes, pascal  # noqa: F401  (registers camvid, cityscapes, pascal, synthetic)
from .base import IGNORE_INDEX, DatasetError, SegmentationDataset
from .registry import DATASETS, DatasetSpec, get_dataset, register_dataset

__all__ = ["DATASETS", "IGNORE_INDEX", "DatasetError", "DatasetSpec", "SegmentationDataset", "get_dataset",
           "register_dataset"]
