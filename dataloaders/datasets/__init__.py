from .base import IGNORE_INDEX, DatasetError, SegmentationDataset
from .camvid import CAMVID_CLASSES, camvid_dataset
from .cityscapes import CITYSCAPES_CLASSES, cityscapes_dataset
from .pascal import VOC_CLASSES, find_voc_root, read_class_names, voc_dataset

__all__ = ["IGNORE_INDEX", "DatasetError", "SegmentationDataset", "CAMVID_CLASSES", "CITYSCAPES_CLASSES",
           "VOC_CLASSES", "camvid_dataset", "cityscapes_dataset", "find_voc_root", "read_class_names",
           "voc_dataset"]
