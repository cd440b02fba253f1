"""Train and val orders of one process, as functions of their arguments alone (what exact resume needs)."""
import torch
from torch.utils.data import Sampler


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


class ShardSampler(Sampler):
    """Indices ``rank::world`` of a dataset, in order and without padding, so that sharded evaluation
    visits every sample exactly once (DistributedSampler pads with repeats, which would count twice)."""

    def __init__(self, dataset, rank, world):
        self.n, self.rank, self.world = len(dataset), rank, world

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self):
        return len(range(self.rank, self.n, self.world))
