"""Inference in one place, for eval.py, predict.py, export.py, attention_maps.py, the benchmarks and the
trainer's validation: checkpoint -> model, images -> network input, test-time flip / scales, the evaluation
loop, label PNGs and overlays."""
import contextlib
import glob
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from dataloaders.images import IMAGE_EXTENSIONS, InputError
from dataloaders.transforms import normalize
from modeling import model_from_checkpoint
from utils import distributed
from utils.device import fp32
from utils.metrics import Evaluator
from utils.saver import CheckpointError, load_file


def load_model(path, flag="--checkpoint", backbone=None, out_stride=None, num_classes=None,
               default_backbone="resnet101", run_stride=None):
    """A DeepLab in eval mode from the checkpoint file ``path``, and what it records:
    ``(model, recorded args, CBAM keys the checkpoint lacked)``.

    ``backbone`` / ``out_stride`` fill in for checkpoints that do not record them (published ones record
    nothing: ``default_backbone``, OS 16); contradicting a recorded value is an error.  ``run_stride`` builds
    the model at that output stride whatever it records (a teacher runs at its student's, so the taps align).
    Errors are one-line CheckpointErrors naming ``flag`` and the file.
    """
    ckpt = load_file(path, flag)
    saved = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
    saved = saved if isinstance(saved, dict) else {}
    for option, key, value in (("--backbone", "backbone", backbone), ("--out-stride", "out_stride", out_stride)):
        if value is not None and key in saved and saved[key] != value:
            raise CheckpointError(f"{flag} {path} records {key} {saved[key]}; {option} {value} contradicts it "
                                  f"(drop {option}: it is only for checkpoints that do not record it)")
    try:
        model, missing, saved = model_from_checkpoint(ckpt, backbone, run_stride or out_stride, num_classes,
                                                      default_backbone)
    except ValueError as e:
        raise CheckpointError(f"{flag} {path}: {e}") from None
    return model.eval(), saved, missing


def list_images(spec, flag="--input"):
    """Image paths from a file, a folder (its image files, sorted) or a glob; refuses two with one stem (their
    outputs would collide)."""
    if os.path.isdir(spec):
        paths = sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
    if not paths:
        raise InputError(f"{flag} {spec}: no images found (a file, a folder of {'/'.join(IMAGE_EXTENSIONS)}, "
                         f"or a glob)")
    stems = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in stems:
            raise InputError(f"{flag}: {stems[stem]} and {p} would both write {stem}.png; rename one")
        stems[stem] = p
    return paths


def to_input(rgbs):
    """H x W x 3 uint8 arrays of one size -> the normalised N x 3 x H x W float batch the networks take."""
    return normalize(torch.stack([torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1) for rgb in rgbs]))


@torch.no_grad()
def predict(model, image, scales=(1.0,), flip=False, precision=None):
    """Class scores at the input size, in fp32, whose argmax is the prediction: the logits for one view, the
    sum of the softmax probabilities over the scales (and flips) otherwise."""
    size = image.shape[2:]
    views = [(s, flipped) for s in scales for flipped in ((False, True) if flip else (False,))]
    total = 0
    for s, flipped in views:
        x = image if s == 1.0 else F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=True)
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            out = fp32(model(x.flip(3) if flipped else x))
        out = out.flip(3) if flipped else out
        if out.shape[2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        if len(views) == 1:
            return out
        total = total + out.softmax(1)
    return total


@dataclass
class Evaluation:
    metrics: dict   # Acc, Acc_class, mIoU, fwIoU, IoU (per class, None where absent), loss (with a criterion)
    images: int     # over all processes
    first: tuple    # (image, label, scores) of this process's first batch, for pictures


@torch.no_grad()
def evaluate(model, loader, num_classes, precision, scales=(1.0,), flip=False, criterion=None, desc="Val",
             show=True, on_batch=None, label_input=None):
    """Confusion-matrix metrics of ``model`` on ``loader``.  Under torch.distributed each process evaluates its
    shard and the matrices (and losses) are summed, so the metrics equal a single-process evaluation.
    ``criterion(scores, label)``: also the summed loss (one view only); ``on_batch(i, image, label, pred)``;
    ``label_input(image, label)``: the network's input (a label-assisted teacher's label channel)."""
    model.eval()
    device = precision.device
    evaluator = Evaluator(num_classes, device)
    loss, n, first = torch.zeros((), dtype=torch.float64, device=device), 0, None
    for i, sample in enumerate(tqdm(loader, desc=desc, dynamic_ncols=True, disable=not show)):
        image, label = precision.images(sample["image"]), sample["label"].to(device)
        scores = predict(model, image if label_input is None else label_input(image, label), scales, flip, precision)
        if criterion is not None:
            loss += criterion(scores, label)
        pred = scores.argmax(dim=1)
        evaluator.add_batch(label, pred)
        if on_batch is not None:
            on_batch(i, image, label, pred)
        first = first or (image, label, scores)
        n += 1
    evaluator.all_reduce()
    metrics = evaluator.results()
    if criterion is not None:
        metrics["loss"] = float(distributed.sum_over_ranks(loss))
    return Evaluation(metrics, int(distributed.sum_over_ranks(torch.tensor(n, device=device))), first)


def mask_image(label, palette):
    """``label`` (H x W class ids) as a palette image: the ids are the pixel values, ``palette`` their colours."""
    mask = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    mask.putpalette(palette.flatten().tolist())
    return mask


def overlay_image(rgb, label, palette, alpha=0.5):
    """The image blended with the colours of ``label`` (``alpha``: the colours' weight), as an RGB image."""
    overlay = (1 - alpha) * np.asarray(rgb, dtype=np.float64) + alpha * palette[np.asarray(label, dtype=np.int64)]
    return Image.fromarray(overlay.astype(np.uint8))
