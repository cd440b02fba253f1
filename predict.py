"""Apply a trained DeepLab (teacher or student) to your own images: a palette PNG of the labels and an
overlay per image.

python predict.py --checkpoint run/pascal/attnfd-resnet18/model_best.pth.tar --input photos/ --output preds/

Each image is inferred at its own resolution after ImageNet normalisation (no resize); images of the
same size are batched on the device. Writes ``<output>/<stem>.png`` (label ids, palette PNG, the
image's size) and ``<output>/<stem>_overlay.png``. The architecture comes from the checkpoint's
recorded args; ``--backbone`` / ``--out-stride`` fill in for checkpoints that record none.
"""
import argparse
import glob
import os
import sys

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from dataloaders import DATASETS
from dataloaders.transforms import MEAN, STD
from dataloaders.utils import get_palette
from eval import predict
from modeling import model_from_checkpoint
from modeling.backbone import BACKBONES
from trainer import ArgumentParser, one_line
from utils.device import Precision
from utils.saver import CheckpointError, load_file

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """An input that cannot be used; the message names it."""


def get_args_parser():
    p = ArgumentParser(description="Predict segmentation masks for images",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a DeepLab checkpoint (this project's or the published format)")
    p.add_argument("--input", required=True, help="an image, a folder of images, or a glob such as 'photos/*.jpg'")
    p.add_argument("--output", required=True, help="folder for <stem>.png and <stem>_overlay.png")
    p.add_argument("--dataset", default="pascal", choices=DATASETS, help="palette of the label PNGs")
    p.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                   help="only for checkpoints that do not record it (default resnet101)")
    p.add_argument("--out-stride", type=int, default=None, choices=[8, 16])
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale, e.g. 0.75 1 1.25")
    p.add_argument("--batch-size", type=int, default=4, help="images of the same size per forward pass")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the colours in the overlay")
    p.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (as train.py --amp)")
    p.add_argument("--no-cuda", action="store_true")
    return p


def list_inputs(spec):
    """Image paths from a file, a folder (its image files, sorted) or a glob."""
    if os.path.isdir(spec):
        paths = sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.lower().endswith(EXTENSIONS))
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
    if not paths:
        raise InputError(f"--input {spec}: no images found (a file, a folder of {'/'.join(EXTENSIONS)}, or a glob)")
    stems = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in stems:
            raise InputError(f"--input: {stems[stem]} and {p} would both write {stem}.png; rename one")
        stems[stem] = p
    return paths


def read_rgb(path):
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read image {path}: {e} (remove it or convert it to JPEG/PNG)") from None


def load_model(path, backbone=None, out_stride=None, flag="--checkpoint"):
    """A DeepLab in eval mode from a checkpoint file; one-line CheckpointError naming ``flag`` and the file."""
    ckpt = load_file(path, flag)
    try:
        model, _, _ = model_from_checkpoint(ckpt, backbone, out_stride)
    except ValueError as e:
        raise CheckpointError(f"{flag} {path}: {e}") from None
    return model.eval()


def run(args):
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    paths = list_inputs(args.input)
    images = {p: read_rgb(p) for p in paths}  # every image is checked before anything is written
    model = load_model(args.checkpoint, args.backbone, args.out_stride)
    precision = Precision(device, args.amp)
    precision.prepare(model).eval()
    os.makedirs(args.output, exist_ok=True)
    palette = get_palette(args.dataset)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    by_size = {}
    for p, rgb in images.items():
        by_size.setdefault(rgb.shape[:2], []).append(p)
    written = []
    with tqdm(total=len(paths), desc="Predict") as bar:
        for same in by_size.values():
            for k in range(0, len(same), args.batch_size):
                chunk = same[k:k + args.batch_size]
                x = torch.stack([(torch.from_numpy(images[p]).permute(2, 0, 1).float() / 255 - mean) / std
                                 for p in chunk])
                labels = predict(model, precision.images(x), args.scales, args.flip, precision).argmax(1).cpu()
                for p, label in zip(chunk, labels.numpy().astype(np.uint8)):
                    stem = os.path.splitext(os.path.basename(p))[0]
                    mask = Image.fromarray(label, mode="P")
                    mask.putpalette(palette.flatten().tolist())
                    mask.save(os.path.join(args.output, f"{stem}.png"))
                    overlay = (1 - args.alpha) * images[p] + args.alpha * palette[label]
                    Image.fromarray(overlay.astype(np.uint8)).save(os.path.join(args.output, f"{stem}_overlay.png"))
                    written.append(stem)
                bar.update(len(chunk))
    print(f"Wrote {2 * len(written)} files for {len(written)} images to {args.output}")
    return written


def main(args):
    try:
        return run(args)
    except (InputError, CheckpointError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
