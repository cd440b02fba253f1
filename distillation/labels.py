"""The label channel of a label-assisted teacher (Label-Assisted Distillation, Qiu et al., ECCV 2024,
arXiv 2407.13254; skyshoumeng/Label_Assisted_Distillation, ``train_baseline.py``).

The teacher is a DeepLab with a 4th input channel (``DeepLab(label_channel=True)``) that holds the label
map: each class id (the ignore label counting as one more id, C) becomes one value, plus per-pixel Gaussian
noise, times ``SCALE``.

* ``random_label_input`` (the teacher's training): each id of each image a fresh N(0, 1) value, noise std 0.03;
* ``label_input`` (the teacher as it distils, and its validation): id k -> (k - (C + 1) // 2) / 10, noise std
  0.02 (the reference: (k - 11) / 10 for VOC's 21 classes + ignore).

``SCALE``: the reference multiplies the channel by 100 next to BGR images with the mean subtracted and no
std division (values of about +-100); here images are standardised (ImageNet mean and std), so the same
ratio to the image channels is 100 / (0.226 x 255) = 1.74.
"""
import torch

SCALE = 100 / (0.226 * 255)
IGNORE = 255


def _ids(labels, num_classes):
    ids = labels.long()
    return torch.where((ids < 0) | (ids >= num_classes), num_classes, ids)  # the ignore label is one more id


def label_input(images, labels, num_classes, noise=0.02):
    """``images`` (N x 3 x H x W) with the fixed-encoding label channel of ``labels`` (N x H x W)."""
    ids = _ids(labels, num_classes).to(images.device)
    value = (ids - (num_classes + 1) // 2).to(images.dtype) / 10
    value = value + noise * torch.randn_like(value)
    return torch.cat([images, (SCALE * value).unsqueeze(1)], 1)


def random_label_input(images, labels, num_classes, noise=0.03):
    """``images`` with the training encoding's label channel: a random N(0, 1) value per id and image."""
    ids = _ids(labels, num_classes).to(images.device)
    codes = torch.randn(ids.shape[0], num_classes + 1, device=images.device, dtype=images.dtype)
    value = torch.gather(codes, 1, ids.flatten(1)).view_as(ids)
    value = value + noise * torch.randn_like(value)
    return torch.cat([images, (SCALE * value).unsqueeze(1)], 1)
