"""Joint image/mask transform presets (torchvision.transforms.v2 on tv_tensors).

Train reproduces the reference pipeline (pytorch-deeplab-xception ``custom_transforms``):
horizontal flip p 0.5; random scale with the short side drawn from randint(0.5*base, 2.0*base),
aspect kept (image bilinear, mask nearest); pad right/bottom up to the crop (image 0, mask
``mask_fill``: 0 for Pascal, 255 for Cityscapes); random crop; Gaussian blur p 0.5 with radius
(sigma) U(0, 1) on the image; ImageNet normalisation of [0, 1] values.
Val resizes the short side to ``crop_size`` (aspect kept) and takes metrics at that size;
``full_res=True`` keeps the original size.
"""
import random

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class RandomShortSideScale(T.Transform):
    """Short side <- randint(lo*base, hi*base); long side int(long * short_new / short)."""

    def __init__(self, base_size, lo=0.5, hi=2.0):
        super().__init__()
        self.low, self.high = int(base_size * lo), int(base_size * hi)

    def make_params(self, flat_inputs):
        return {"short": random.randint(self.low, self.high)}

    def transform(self, inpt, params):
        h, w = inpt.shape[-2:]
        s = params["short"]
        size = [int(h * s / w), s] if h > w else [s, int(w * s / h)]
        return TF.resize(inpt, size, antialias=True)  # bilinear for images, nearest for masks


class PadToSize(T.Transform):
    """Pad right and bottom up to ``size`` x ``size`` (image with 0, mask with ``mask_fill``)."""

    def __init__(self, size, mask_fill):
        super().__init__()
        self.size, self.mask_fill = size, mask_fill

    def transform(self, inpt, params):
        h, w = inpt.shape[-2:]
        padh, padw = max(self.size - h, 0), max(self.size - w, 0)
        if not (padh or padw):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else 0
        return TF.pad(inpt, [0, 0, padw, padh], fill=fill)


def normalize(image):
    """uint8 (..., 3, H, W) -> float32 scaled to [0, 1], then ImageNet mean/std: the networks' input, in training
    and at inference."""
    return TF.normalize(TF.to_dtype(image, torch.float32, scale=True), MEAN, STD)


class ToSample(T.Transform):
    """Final step: float normalised image, int64 mask."""

    def forward(self, image, mask):
        return normalize(image.as_subclass(torch.Tensor)), mask.to(torch.int64).as_subclass(torch.Tensor)


def train_transform(base_size, crop_size, mask_fill=0):
    return T.Compose([
        T.RandomHorizontalFlip(0.5),
        RandomShortSideScale(base_size),
        PadToSize(crop_size, mask_fill),
        T.RandomCrop(crop_size),
        T.RandomApply([T.GaussianBlur(kernel_size=7, sigma=(1e-6, 1.0))], p=0.5),
    ])


def val_transform(crop_size, full_res=False):
    return T.Identity() if full_res else T.Resize(crop_size, antialias=True)


class SegmentationPreset:
    """Callable ``(image, mask) -> (float 3xHxW, int64 HxW)`` for a split."""

    def __init__(self, train, base_size=513, crop_size=513, mask_fill=0, full_res=False):
        if train:
            self.geometric = train_transform(base_size, crop_size, mask_fill)
        else:
            self.geometric = val_transform(crop_size, full_res)
        self.finish = ToSample()

    def __call__(self, image, mask):
        image, mask = self.geometric(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return self.finish(image, mask)
