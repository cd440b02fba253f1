"""Confusion-matrix metrics of the reference ``Evaluator``, accumulated on the device."""
import numpy as np
import torch


class Evaluator:
    def __init__(self, num_class, device="cpu"):
        self.num_class = num_class
        self.confusion_matrix = torch.zeros(num_class, num_class, dtype=torch.int64, device=device)

    def add_batch(self, gt_image, pre_image):
        """Count pixels with ground truth in [0, C) (255 and other values are skipped)."""
        gt = torch.as_tensor(gt_image, device=self.confusion_matrix.device).long()
        pred = torch.as_tensor(pre_image, device=self.confusion_matrix.device).long()
        assert gt.shape == pred.shape, f"gt {tuple(gt.shape)} vs prediction {tuple(pred.shape)}"
        mask = (gt >= 0) & (gt < self.num_class)
        idx = self.num_class * gt[mask] + pred[mask]
        self.confusion_matrix += torch.bincount(idx, minlength=self.num_class ** 2).view(self.num_class, -1)

    def reset(self):
        self.confusion_matrix.zero_()

    def all_reduce(self):
        """Sum the matrix over processes (torch.distributed), so every rank reports global metrics."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.confusion_matrix)

    def _cm(self):
        return self.confusion_matrix.double().cpu().numpy()

    def Pixel_Accuracy(self):
        cm = self._cm()
        return float(np.diag(cm).sum() / max(cm.sum(), 1))

    def Pixel_Accuracy_Class(self):
        cm = self._cm()
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.nanmean(np.diag(cm) / cm.sum(axis=1)))

    def Intersection_over_Union(self):
        """Per-class IoU (NaN for a class absent from both ground truth and prediction)."""
        cm = self._cm()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.diag(cm) / (cm.sum(axis=1) + cm.sum(axis=0) - np.diag(cm))

    def Mean_Intersection_over_Union(self):
        return float(np.nanmean(self.Intersection_over_Union()))

    def Frequency_Weighted_Intersection_over_Union(self):
        cm = self._cm()
        freq = cm.sum(axis=1) / max(cm.sum(), 1)
        iu = self.Intersection_over_Union()
        return float((freq[freq > 0] * iu[freq > 0]).sum())

    def results(self):
        return {"Acc": self.Pixel_Accuracy(), "Acc_class": self.Pixel_Accuracy_Class(),
                "mIoU": self.Mean_Intersection_over_Union(), "fwIoU": self.Frequency_Weighted_Intersection_over_Union(),
                "IoU": [None if np.isnan(v) else float(v) for v in self.Intersection_over_Union()]}
