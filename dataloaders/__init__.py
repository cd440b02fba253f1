"""Datasets and loaders: ``build_dataset(name, split, ...)`` and ``build_loaders(name, batch_size, ...)``; the
datasets themselves are declared in ``dataloaders/datasets`` (registry ``DATASETS``)."""
from torch.utils.data import DataLoader

from mypath import Path

from .datasets import DATASETS, DatasetError, get_dataset
from .samplers import ResumableSampler, ShardSampler
from .transforms import SegmentationPreset


def dataset_root(dataset):
    """The root of ``dataset`` from mypath.py or ATTNFD_<NAME>_ROOT; DatasetError when neither has one."""
    try:
        return Path.db_root_dir(dataset)
    except ValueError as e:
        raise DatasetError(str(e)) from None


def class_names(dataset):
    """The class names of ``dataset`` (for VOC-layout datasets: the classes.txt of the root it reads)."""
    return get_dataset(dataset).class_names(dataset_root(dataset))


def build_dataset(dataset, split, base_size=513, crop_size=513, full_res=False, use_sbd=False):
    """One split of ``dataset`` with the train preset (``split == "train"``) or the val preset."""
    spec = get_dataset(dataset)
    if use_sbd and "use_sbd" not in spec.options:
        raise DatasetError(f"--use-sbd: only --dataset pascal has SBD annotations, not {dataset}; drop --use-sbd")
    transform = SegmentationPreset(split == "train", base_size, crop_size, spec.mask_fill, full_res)
    return spec.build(dataset_root(dataset), split, transform, **({"use_sbd": True} if use_sbd else {}))


def build_loaders(dataset, batch_size, base_size=513, crop_size=513, full_res_val=False, use_sbd=False, seed=0,
                  rank=0, world=1, val=True, **loader_kwargs):
    """The train and val loaders of process ``rank`` of ``world``, with ``batch_size`` train images per
    process.  The train order comes from a :class:`ResumableSampler` (reshuffled by ``set_epoch``), whose last
    incomplete batch is dropped (a batch of one breaks BatchNorm on the pooled ASPP branch); the val loader
    has batch size 1 (sizes differ) and, with several processes, its own shard of the val set (every image
    exactly once).  ``full_res_val``: validate at original resolution; ``val`` False: no val loader (None; the val
    split is not read).  Returns (train, val, num_classes)."""
    train_set = build_dataset(dataset, "train", base_size, crop_size, use_sbd=use_sbd)
    sampler = ResumableSampler(train_set, seed, batch_size, rank, world)
    if len(sampler) < batch_size:
        raise DatasetError(f"--batch-size {batch_size * world}: the train split has only {len(train_set)} images"
                           + (f" ({len(sampler)} per process)" if world > 1 else "") + "; use a smaller --batch-size")
    train = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=len(sampler) > batch_size,
                       **loader_kwargs)
    if not val:
        return train, None, train_set.num_classes
    val_set = build_dataset(dataset, "val", base_size, crop_size, full_res=full_res_val)
    val = DataLoader(val_set, batch_size=1, shuffle=False, sampler=ShardSampler(val_set, rank, world) if world > 1
                     else None, **loader_kwargs)
    return train, val, train_set.num_classes


def make_data_loader(args, **kwargs):
    """The reference's signature, ``(train, val, test, num_class)`` from an argparse namespace (``test`` is
    None: evaluate other splits with ``eval.py --split``); ``kwargs`` go to the DataLoaders."""
    train, val, num_classes = build_loaders(args.dataset, args.batch_size, args.base_size, args.crop_size,
                                            getattr(args, "full_res_val", False), getattr(args, "use_sbd", False),
                                            getattr(args, "seed", 0), **kwargs)
    return train, val, None, num_classes


__all__ = ["DATASETS", "DatasetError", "build_dataset", "build_loaders", "class_names", "dataset_root",
           "make_data_loader"]
