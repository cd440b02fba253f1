"""Dataset roots.  Edit the defaults below, or set ATTNFD_<NAME>_ROOT (the environment wins)."""
import os


class Path:
    ROOTS = {
        "pascal": "/path/to/datasets/VOCdevkit/VOC2012/",      # folder with JPEGImages/, SegmentationClass/
        "sbd": "/path/to/datasets/benchmark_RELEASE/",         # folder with dataset/{img,cls,train.txt,val.txt}
        "cityscapes": "/path/to/datasets/cityscapes/",         # folder with leftImg8bit/, gtFine/
        "camvid": "/path/to/datasets/CamVid/",                 # folder with train/, trainannot/, ... (README)
        "synthetic": "data/synthetic/VOC2012/",                # written by `python -m dataloaders.synthetic`
    }

    @staticmethod
    def db_root_dir(dataset):
        key = dataset.lower()
        root = os.environ.get(f"ATTNFD_{key.upper()}_ROOT") or Path.ROOTS.get(key)
        if root is None:
            raise ValueError(f"no root for dataset {dataset!r}: add \"{key}\": \"/path/to/it\" to Path.ROOTS in "
                             f"mypath.py, or set ATTNFD_{key.upper()}_ROOT")
        return root
