"""Datasets and loaders: ``make_data_loader(args, **kwargs) -> (train, val, test, num_class)``."""
import torch
from torch.utils.data import DataLoader, Sampler

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


class ResumableSampler(Sampler):
    """The train order of one process: a permutation that is a function of (seed, epoch) alone (as
    DistributedSampler's, whose shard of it this process takes), each index paired with a per-sample
    augmentation seed, and ``start`` samples skipped to resume an epoch in the middle."""

    def __init__(self, dataset, seed, batch_size, rank=0, world=1):
        self.n, self.seed, self.batch_size, self.rank, self.world = len(dataset), seed, batch_size, rank, world
        self.epoch, self.start = 0, 0
        self.per_rank = self.n // world  # drop the tail so that every rank takes the same number of samples

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start = epoch, start_batch * self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        mine = order[: self.per_rank * self.world][self.rank::self.world]
        base = (self.seed * 1_000_003 + self.epoch) * 1_000_003
        return iter([(base + i, i) for i in mine[self.start:]])

    def __len__(self):
        return self.per_rank - self.start


def make_data_loader(args, train_sampler=None, val_sampler=None, batch_size=None, shard=False, **kwargs):
    """Reference signature and return value.  The val loader uses batch size 1 (sizes differ).

    Train batches drop the last incomplete batch (a batch of one breaks BatchNorm on the pooled
    ASPP branch).  ``args.full_res_val`` evaluates at original resolution.  ``batch_size``: this
    process's batch (default ``args.batch_size``).  The train order comes from a
    :class:`ResumableSampler` (reshuffled by ``set_epoch``; ``shard``: this process's part under
    torch.distributed); with ``shard`` the val set is split too (every image exactly once).
    """
    from utils.distributed import ShardSampler, rank, world_size

    batch_size = batch_size or args.batch_size
    train_set = build_dataset(args, "train")
    val_set = build_dataset(args, "val", full_res=getattr(args, "full_res_val", False))
    if train_sampler is None:
        world = world_size() if shard else 1
        train_sampler = ResumableSampler(train_set, getattr(args, "seed", 0), batch_size, rank() if shard else 0, world)
    if shard and val_sampler is None:
        val_sampler = ShardSampler(val_set)
    test_loader = None
    if args.dataset == "camvid":
        test_loader = DataLoader(build_dataset(args, "test"), batch_size=1, shuffle=False, **kwargs)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=train_sampler,
                              drop_last=len(train_sampler) > batch_size, **kwargs)
    val_loader = DataLoader(val_set, batch_size=1, shuffle=False, sampler=val_sampler, **kwargs)
    return train_loader, val_loader, test_loader, train_set.num_classes
