"""A synthetic segmentation dataset written in the Pascal VOC on-disk format.

For people with no dataset: ``python -m dataloaders.synthetic --out data/synthetic`` writes
``VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (palette, 255 = void borders),
ImageSets/Segmentation/{train,val}.txt, classes.txt}``, which the VOC reader then reads like the
real thing (``--dataset synthetic``, root from mypath / ATTNFD_SYNTHETIC_ROOT).

An object's class depends on its shape and colour, and for rings on context: the stripe
texture of the region the ring stands on.  Objects occlude each other; colour alone is easy,
shape and context take capacity and training time.
Seeded: the same arguments give the same files.
"""
import os

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from utils.cli import ArgumentParser, UsageError, number, one_line_errors
from utils.outputs import Outputs, stamp, write_file, written_by

from .utils import voc_palette

COMMAND = "dataloaders.synthetic"
CLASSES = ("background", "red disk", "blue disk", "red bar", "blue bar", "ring on horizontal stripes",
           "ring on vertical stripes")


def _colour(rng, warm):
    hi, lo = rng.integers(170, 256), rng.integers(0, 100, size=2)
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
    image = base[None, None, :] + (stripes[..., None] - 0.5) * rng.uniform(40, 70)
    return image, region


def make_sample(rng, size=96, min_objects=2, max_objects=4, radius=(0.14, 0.28)):
    image, vertical = _texture(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    void = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(min_objects, max_objects + 1)):
        shape = rng.integers(0, 3)
        r = rng.uniform(*radius) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        if shape == 0:  # disk
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        elif shape == 1:  # bar: a 5:1 rectangle at a random angle
            t = rng.uniform(0, np.pi)
            u, v = np.array([np.cos(t), np.sin(t)]) * r * 1.25, np.array([-np.sin(t), np.cos(t)]) * r * 0.25
            draw.polygon([tuple(np.array([cx, cy]) + a * u + b * v) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))],
                         fill=1)
        else:  # ring
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
            q = r * 0.55
            draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
        mask = np.asarray(canvas).astype(bool)
        if not mask.any():
            continue
        warm = bool(rng.integers(0, 2))
        if shape < 2:
            cls = 1 + 2 * shape + (0 if warm else 1)
        else:  # context: the texture under the ring's centre decides
            cls = 6 if vertical[int(cy), int(cx)] else 5
        image[mask] = np.asarray(_colour(rng, warm), dtype=np.float32) + rng.normal(0, 6, size=(mask.sum(), 3))
        label[mask] = cls
        border = ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=1)
        void = (void & ~mask) | border
    label[void] = 255
    image += rng.normal(0, 4, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


DIFFICULTIES = {  # objects per image (min, max) and radius as a fraction of the image side
    "easy": {"min_objects": 2, "max_objects": 4, "radius": (0.14, 0.28)},  # the demo's task
    "hard": {"min_objects": 3, "max_objects": 7, "radius": (0.08, 0.18)},  # smaller, more crowded objects
}


def generate(out, n_train=160, n_val=40, size=64, seed=0, difficulty="easy", overwrite=False):
    """Write the dataset under ``out/VOC2012``; return that root.  A root that holds files and was not written
    here (its ``synthetic.json``) is refused (UsageError), unless ``overwrite``: a real dataset is never replaced
    by accident."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    root = os.path.join(out, "VOC2012")
    outputs = Outputs(COMMAND, overwrite)
    marker = os.path.join(root, "synthetic.json")
    if os.path.isdir(root) and os.listdir(root) and written_by(marker) != stamp(COMMAND, "--out") and not overwrite:
        raise UsageError(f"--out {out}: {root} holds files that dataloaders.synthetic did not write (a real dataset?); "
                         f"choose another --out, or add --overwrite")
    outputs.writes_run("--out", root).check()
    outputs.write_json(marker, {"n_train": n_train, "n_val": n_val, "size": size, "seed": seed,
                                "difficulty": difficulty})  # first: a half-written root is still this one's
    rng = np.random.default_rng(seed)
    palette = voc_palette().flatten().tolist()
    splits = {"train": [], "val": []}
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        name = f"synth_{i:05d}"
        image, label = make_sample(rng, size, **DIFFICULTIES[difficulty])
        outputs.write_with(os.path.join(root, "JPEGImages", name + ".jpg"),
                           lambda tmp, a=image: Image.fromarray(a).save(tmp, format="JPEG", quality=92))
        png = Image.fromarray(label, mode="P")
        png.putpalette(palette)
        outputs.write_png(os.path.join(root, "SegmentationClass", name + ".png"), png)
        splits[split].append(name)
    for split, names in splits.items():
        outputs.write_with(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"),
                           lambda tmp, n=names: write_file(tmp, "\n".join(n) + "\n"))
    outputs.write_with(os.path.join(root, "classes.txt"), lambda tmp: write_file(tmp, "\n".join(CLASSES) + "\n"))
    return root


def get_args_parser():
    p = ArgumentParser(description="Write the synthetic dataset in Pascal VOC format")
    p.add_output("--out", kind="run", default="data/synthetic", help="output folder (the VOC root is <out>/VOC2012)")
    p.add_argument("--n-train", type=number(int, 1), default=160)
    p.add_argument("--n-val", type=number(int, 1), default=40)
    p.add_argument("--size", type=number(int, 16), default=64, help="image side in pixels")
    p.add_argument("--seed", type=number(int, 0), default=0)
    p.add_argument("--difficulty", default="easy", choices=sorted(DIFFICULTIES),
                   help="easy: the demo's task; hard: smaller, more crowded objects")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a root that holds files this command did not write")
    return p


def main(a):
    with one_line_errors():
        if os.path.exists(a.out) and not os.path.isdir(a.out):
            raise UsageError(f"--out {a.out} is a file; give a folder")
        return generate(a.out, a.n_train, a.n_val, a.size, a.seed, a.difficulty, a.overwrite)


if __name__ == "__main__":
    print(main(get_args_parser().parse_args()))
