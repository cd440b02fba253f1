"""Segmentation losses of the reference (pytorch-deeplab-xception ``SegmentationLosses``).

Both are divided by the batch size *after* the per-pixel mean (``batch_average``): the reference's
learning rates and ``attn_lambda`` were tuned with that extra division, so it is kept.

Under torch.distributed the mean is over the pixels of the *global* batch and the division by the
global batch size, so N ranks x B/N samples give the loss (and, after DDP's average, the gradient) of
one process with B samples: the per-rank sums and counts go through ``sum_over_ranks``.
"""
import torch
import torch.nn.functional as F

from utils.distributed import global_batch, sum_over_ranks


class SegmentationLosses:
    def __init__(self, weight=None, ignore_index=255, batch_average=True, over_ranks=True):
        """``over_ranks=False``: this process's batch alone (validation, where ranks see different counts)."""
        self.weight, self.ignore_index, self.batch_average = weight, ignore_index, batch_average
        self.reduce = sum_over_ranks if over_ranks else (lambda x: x)

    def build_loss(self, mode="ce"):
        if mode == "ce":
            return self.CrossEntropyLoss
        if mode == "focal":
            return self.FocalLoss
        raise ValueError(f"--loss-type must be ce or focal, got {mode!r}")

    def _ce(self, logit, target):
        """Mean CE over the valid pixels of the global batch (class-weighted as F.cross_entropy's mean)."""
        target = target.long()
        weight = None if self.weight is None else self.weight.to(logit.device, logit.dtype)
        total = F.cross_entropy(logit, target, weight=weight, ignore_index=self.ignore_index, reduction="sum")
        valid = target != self.ignore_index
        count = valid.sum().to(total.dtype) if weight is None else weight[target[valid]].sum()
        return self.reduce(total) / self.reduce(count)

    def _average(self, loss, logit):
        batch = global_batch(logit) if self.reduce is sum_over_ranks else logit.shape[0]
        return loss / batch if self.batch_average else loss

    def CrossEntropyLoss(self, logit, target):
        return self._average(self._ce(logit, target), logit)

    def FocalLoss(self, logit, target, gamma=2, alpha=0.5):
        logpt = -self._ce(logit, target)
        pt = torch.exp(logpt)
        return self._average(-((1 - pt) ** gamma) * (alpha * logpt), logit)
