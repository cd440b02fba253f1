"""Segmentation losses of the reference (pytorch-deeplab-xception ``SegmentationLosses``).

Both are divided by the batch size *after* the per-pixel mean (``batch_average``): the reference's
learning rates and ``attn_lambda`` were tuned with that extra division, so it is kept.
"""
import torch
import torch.nn.functional as F


class SegmentationLosses:
    def __init__(self, weight=None, ignore_index=255, batch_average=True):
        self.weight, self.ignore_index, self.batch_average = weight, ignore_index, batch_average

    def build_loss(self, mode="ce"):
        if mode == "ce":
            return self.CrossEntropyLoss
        if mode == "focal":
            return self.FocalLoss
        raise ValueError(f"--loss-type must be ce or focal, got {mode!r}")

    def _ce(self, logit, target):
        weight = None if self.weight is None else self.weight.to(logit.device, logit.dtype)
        return F.cross_entropy(logit, target.long(), weight=weight, ignore_index=self.ignore_index)

    def CrossEntropyLoss(self, logit, target):
        loss = self._ce(logit, target)
        return loss / logit.shape[0] if self.batch_average else loss

    def FocalLoss(self, logit, target, gamma=2, alpha=0.5):
        logpt = -self._ce(logit, target)
        pt = torch.exp(logpt)
        loss = -((1 - pt) ** gamma) * (alpha * logpt)
        return loss / logit.shape[0] if self.batch_average else loss
