"""Evaluate a checkpoint on a split: mIoU, accuracies, per-class IoU; optional flip / multi-scale
testing, JSON output and colourised predictions + overlays as PNG.

python eval.py --checkpoint run/pascal/deeplab-resnet101/model_best.pth.tar --dataset pascal --flip
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataloaders import DATASETS, build_dataset, class_names
from dataloaders.datasets import DatasetError
from dataloaders.utils import decode_segmap, denormalize
from modeling import model_from_checkpoint
from modeling.backbone import BACKBONES
from trainer import ArgumentParser, one_line
from utils.device import Precision
from utils.metrics import Evaluator
from utils.saver import CheckpointError, load_file


def get_args_parser():
    p = ArgumentParser(description="Evaluate a DeepLabV3+ checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="e.g. run/<dataset>/<checkname>/model_best.pth.tar")
    p.add_argument("--dataset", default="pascal", choices=DATASETS)
    p.add_argument("--split", default="val")
    p.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                   help="only needed when the checkpoint does not record it (default resnet101)")
    p.add_argument("--out-stride", type=int, default=None, choices=[8, 16])
    p.add_argument("--crop-size", type=int, default=513, help="short side in resize mode")
    p.add_argument("--full-res", action="store_true", help="metrics at original resolution (no resize)")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale testing, e.g. 0.75 1 1.25")
    p.add_argument("--json", default=None, help="write the metrics to this JSON file")
    p.add_argument("--save-vis", default=None, metavar="DIR", help="write colourised predictions and overlays")
    p.add_argument("--max-vis", type=int, default=20, help="at most this many images for --save-vis")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (as train.py --amp); metrics in fp32")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    return p


@torch.no_grad()
def predict(model, image, scales=(1.0,), flip=False, precision=None):
    """Sum of softmax probabilities over scales (and flips), at the input size, in fp32."""
    size = image.shape[2:]
    probs = 0
    for s in scales:
        x = image if s == 1.0 else F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=True)
        views = [(x, False), (x.flip(3), True)] if flip else [(x, False)]
        for v, flipped in views:
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                out = model(v).float()
            out = out.flip(3) if flipped else out
            probs = probs + F.interpolate(out, size=size, mode="bilinear", align_corners=True).softmax(1)
    return probs


def save_visuals(directory, name, image, label, pred, dataset):
    os.makedirs(directory, exist_ok=True)
    rgb = (denormalize(image[None])[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    colour = decode_segmap(pred, dataset)
    Image.fromarray(colour).save(os.path.join(directory, f"{name}_pred.png"))
    Image.fromarray(decode_segmap(label, dataset)).save(os.path.join(directory, f"{name}_gt.png"))
    overlay = (0.5 * rgb + 0.5 * colour).astype(np.uint8)
    Image.fromarray(overlay).save(os.path.join(directory, f"{name}_overlay.png"))


def evaluate(args):
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    ckpt = load_file(args.checkpoint, "--checkpoint")
    data_args = argparse.Namespace(dataset=args.dataset, base_size=args.crop_size, crop_size=args.crop_size,
                                   use_sbd=False)
    dataset = build_dataset(data_args, args.split, full_res=args.full_res)
    saved = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
    for flag, key, value in (("--backbone", "backbone", args.backbone),
                             ("--out-stride", "out_stride", args.out_stride)):
        if value is not None and key in saved and saved[key] != value:  # the flags fill in, never contradict
            raise CheckpointError(f"--checkpoint {args.checkpoint} records {key} {saved[key]}; {flag} {value} "
                                  f"contradicts it (drop {flag}: it is only for checkpoints that do not record it)")
    try:
        model, _, _ = model_from_checkpoint(ckpt, args.backbone, args.out_stride, dataset.num_classes)
    except ValueError as e:
        raise CheckpointError(f"--checkpoint {args.checkpoint}: {e}") from None
    precision = Precision(device, args.amp, channels_last=args.channels_last)
    precision.prepare(model).eval()
    names = class_names(args.dataset)
    evaluator = Evaluator(dataset.num_classes, device)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.workers)
    for i, sample in enumerate(tqdm(loader, desc=f"Eval {args.dataset}:{args.split}")):
        image, label = precision.images(sample["image"]), sample["label"].to(device)
        pred = predict(model, image, args.scales, args.flip, precision).argmax(1)
        evaluator.add_batch(label, pred)
        if args.save_vis and i < args.max_vis:
            name = os.path.splitext(os.path.basename(dataset.pairs[i][0]))[0]
            save_visuals(args.save_vis, name, image[0], label[0].cpu(), pred[0].cpu(), args.dataset)
    r = evaluator.results()
    result = {"checkpoint": args.checkpoint, "dataset": args.dataset, "split": args.split,
              "mode": "full-res" if args.full_res else f"short side {args.crop_size}", "flip": args.flip,
              "scales": args.scales, "images": len(dataset), "mIoU": r["mIoU"], "Acc": r["Acc"],
              "Acc_class": r["Acc_class"], "fwIoU": r["fwIoU"], "IoU": dict(zip(names, r["IoU"]))}
    width = max(len(n) for n in names)
    print(f"{'class':<{width}}  IoU")
    for n, v in result["IoU"].items():
        print(f"{n:<{width}}  {'  n/a' if v is None else f'{100 * v:5.2f}'}")
    print(f"mIoU {100 * r['mIoU']:.2f}  Acc {100 * r['Acc']:.2f}  Acc_class {100 * r['Acc_class']:.2f}  "
          f"fwIoU {100 * r['fwIoU']:.2f}  ({len(dataset)} images, {result['mode']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def main(args):
    try:
        return evaluate(args)
    except (DatasetError, CheckpointError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
