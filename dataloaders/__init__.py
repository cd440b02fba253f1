"""Datasets and loaders: ``make_data_loader(args, **kwargs) -> (train, val, test, num_class)``."""
from torch.utils.data import DataLoader

from mypath import Path

from .datasets import (
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    DatasetError,
    camvid_dataset,
    cityscapes_dataset,
    find_voc_root,
    read_class_names,
    voc_dataset,
)
from .transforms import SegmentationPreset

DATASETS = ("pascal", "cityscapes", "camvid", "synthetic")
MASK_FILL = {"pascal": 0, "synthetic": 0, "cityscapes": 255, "camvid": 255}  # reference: 0 Pascal, 255 Cityscapes


def class_names(dataset):
    if dataset == "cityscapes":
        return CITYSCAPES_CLASSES
    if dataset == "camvid":
        return CAMVID_CLASSES
    return read_class_names(find_voc_root(Path.db_root_dir(dataset)), VOC_CLASSES)  # the root the dataset reads


def build_dataset(args, split, full_res=False):
    """One split of ``args.dataset`` with the train or val transform preset."""
    name = args.dataset
    train = split == "train"
    transform = SegmentationPreset(train, args.base_size, args.crop_size, MASK_FILL.get(name, 255), full_res)
    root = Path.db_root_dir(name)
    if name in ("pascal", "synthetic"):
        use_sbd = getattr(args, "use_sbd", False) and name == "pascal"
        return voc_dataset(root, split, transform, use_sbd, Path.db_root_dir("sbd") if use_sbd else None, name)
    if name == "cityscapes":
        return cityscapes_dataset(root, split, transform)
    if name == "camvid":
        return camvid_dataset(root, split, transform)
    raise DatasetError(f"--dataset {name!r} is not supported; choose one of {', '.join(DATASETS)}")


def make_data_loader(args, train_sampler=None, val_sampler=None, batch_size=None, shard=False, **kwargs):
    """Reference signature and return value.  The val loader uses batch size 1 (sizes differ).

    Train batches drop the last incomplete batch (a batch of one breaks BatchNorm on the pooled
    ASPP branch).  ``args.full_res_val`` evaluates at original resolution.  ``batch_size``: this
    process's batch (default ``args.batch_size``); ``shard``: under torch.distributed, each process
    takes its part of the train set (DistributedSampler, reshuffled by ``set_epoch``) and of the val set
    (every image exactly once over all processes).
    """
    batch_size = batch_size or args.batch_size
    train_set = build_dataset(args, "train")
    val_set = build_dataset(args, "val", full_res=getattr(args, "full_res_val", False))
    if shard:
        from torch.utils.data.distributed import DistributedSampler

        from utils.distributed import ShardSampler

        train_sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
        val_sampler = ShardSampler(val_set)
    test_loader = None
    if args.dataset == "camvid":
        test_loader = DataLoader(build_dataset(args, "test"), batch_size=1, shuffle=False, **kwargs)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=train_sampler is None,
                              sampler=train_sampler, drop_last=len(train_set) > batch_size, **kwargs)
    val_loader = DataLoader(val_set, batch_size=1, shuffle=False, sampler=val_sampler, **kwargs)
    return train_loader, val_loader, test_loader, train_set.num_classes
