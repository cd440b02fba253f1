"""A synthetic segmentation dataset written in the Pascal VOC on-disk format.

For people with no dataset: ``python -m dataloaders.synthetic --out data/synthetic`` writes
``VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (palette, 255 = void borders),
ImageSets/Segmentation/{train,val}.txt, classes.txt}``, which the VOC reader then reads like the
real thing (``--dataset synthetic``, root from mypath / ATTNFD_SYNTHETIC_ROOT).

An object's class depends on its shape and colour, and for triangles on context: the stripe
texture of the region the triangle stands on.  Colours overlap between classes, textures are of
low contrast and objects occlude each other, so capacity and receptive field pay off.
Seeded: the same arguments give the same files.
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .utils import voc_palette

CLASSES = ("background", "red disk", "blue disk", "red square", "blue square", "triangle on horizontal stripes",
           "triangle on vertical stripes")


def _colour(rng, warm):
    hi, lo = rng.integers(130, 256), rng.integers(0, 140, size=2)
    return (hi, lo[0], lo[1]) if warm else (lo[0], lo[1], hi)


def _texture(rng, size):
    """Two regions split by a random line, one with horizontal and one with vertical stripes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.25, 0.25) * size
    region = ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)) > offset  # True: vertical
    period = rng.uniform(5, 9)
    h_stripes = (np.sin(2 * np.pi * yy / period) > 0).astype(np.float32)
    v_stripes = (np.sin(2 * np.pi * xx / period) > 0).astype(np.float32)
    stripes = np.where(region, v_stripes, h_stripes)
    base = rng.uniform(70, 150, size=3)
    image = base[None, None, :] + (stripes[..., None] - 0.5) * rng.uniform(25, 50)
    return image, region


def make_sample(rng, size=128, min_objects=2, max_objects=4):
    image, vertical = _texture(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    void = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(min_objects, max_objects + 1)):
        shape = rng.integers(0, 3)
        r = rng.uniform(0.09, 0.2) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        if shape == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        elif shape == 1:
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=1)
        else:
            t = rng.uniform(0, 2 * np.pi)
            draw.polygon([(cx + r * 1.2 * np.cos(t + k * 2 * np.pi / 3), cy + r * 1.2 * np.sin(t + k * 2 * np.pi / 3))
                          for k in range(3)], fill=1)
        mask = np.asarray(canvas).astype(bool)
        if not mask.any():
            continue
        warm = bool(rng.integers(0, 2))
        if shape < 2:
            cls = 1 + 2 * shape + (0 if warm else 1)
        else:  # context: the texture under the triangle's centre decides
            cls = 6 if vertical[int(cy), int(cx)] else 5
        image[mask] = np.asarray(_colour(rng, warm), dtype=np.float32) + rng.normal(0, 6, size=(mask.sum(), 3))
        label[mask] = cls
        border = ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=1)
        void = (void & ~mask) | border
    label[void] = 255
    image += rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(out, n_train=240, n_val=60, size=128, seed=0):
    """Write the dataset under ``out/VOC2012``; return that root."""
    root = os.path.join(out, "VOC2012")
    for d in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_palette().flatten().tolist()
    splits = {"train": [], "val": []}
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        name = f"synth_{i:05d}"
        image, label = make_sample(rng, size)
        Image.fromarray(image).save(os.path.join(root, "JPEGImages", name + ".jpg"), quality=92)
        png = Image.fromarray(label, mode="P")
        png.putpalette(palette)
        png.save(os.path.join(root, "SegmentationClass", name + ".png"))
        splits[split].append(name)
    for split, names in splits.items():
        with open(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    return root


def get_args_parser():
    p = argparse.ArgumentParser(description="Write the synthetic dataset in Pascal VOC format")
    p.add_argument("--out", default="data/synthetic", help="output folder (the VOC root is <out>/VOC2012)")
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("--n-val", type=int, default=60)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    print(generate(a.out, a.n_train, a.n_val, a.size, a.seed))
