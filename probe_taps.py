"""How much of the labels a model's AttnFD taps hold, read by a linear probe:

    python probe_taps.py --checkpoint A.pth.tar [B.pth.tar ...] --dataset synthetic [--output probe.json]

For every checkpoint and every tap (backbone, ASPP, decoder: the features AttnFD distils, before CBAM), the
tap of each train image (val preset: no augmentation) is resized bilinearly to a ``--grid`` x ``--grid``
label grid, standardised, and a ridge-regularised least-squares classifier to one-hot labels is fitted on the
train pixels; its val pixel mIoU says whether the classes can be read linearly from that tap.  A teacher whose
taps separate the classes no better than the student's own has little to give a feature-matching loss.
"""
import torch
import torch.nn.functional as F

from dataloaders import DATASETS, DatasetError, dataset_root
from dataloaders.datasets import get_dataset
from dataloaders.transforms import SegmentationPreset
from modeling import TAPS
from utils.cli import ArgumentParser, cli_main, number
from utils.inference import load_model
from utils.metrics import Evaluator
from utils.outputs import Outputs
from utils.saver import CheckpointError


def get_args_parser():
    p = ArgumentParser(description="Linear-probe mIoU of the AttnFD taps of one or more checkpoints")
    p.add_input("--checkpoint", kind="files", nargs="+", required=True,
                help="checkpoints written by train.py / train_kd.py")
    p.add_input("--dataset", kind="dataset", default="synthetic", choices=list(DATASETS),
                help="dataset whose train split fits the probe and val scores it")
    p.add_argument("--crop-size", type=number(int, 16), default=None,
                   help="val-preset short side (default: each checkpoint's recorded --crop-size)")
    p.add_argument("--grid", type=number(int, 1), default=16, help="label grid the taps are resized to")
    p.add_argument("--ridge", type=number(float, 0, low_open=True), default=1e-2,
                   help="ridge weight, relative to the mean feature variance (1 after standardising)")
    p.add_output("--output", default=None,
                 help="also write the results to this JSON file ({\"checkpoints\": [one row per checkpoint]})")
    p.add_overwrite()
    return p


def split_samples(dataset, split, crop_size):
    spec = get_dataset(dataset)
    return spec.build(dataset_root(dataset), split, SegmentationPreset(False, crop_size, crop_size, spec.mask_fill))


@torch.no_grad()
def tap_pixels(model, samples, grid):
    """{tap: (N*grid*grid) x C features}, and the N*grid*grid labels (nearest; 255 = ignored)."""
    feats, labels = {tap: [] for tap in TAPS}, []
    for i in range(len(samples)):
        sample = samples[i]
        taps = model.forward_features(sample["image"][None], logits=False, stages=False).taps
        for tap in TAPS:
            f = F.interpolate(taps[tap].float(), size=(grid, grid), mode="bilinear", align_corners=True)
            feats[tap].append(f[0].flatten(1).T)
        labels.append(F.interpolate(sample["label"][None, None].float(), size=(grid, grid), mode="nearest")
                      .long().flatten())
    return {tap: torch.cat(f) for tap, f in feats.items()}, torch.cat(labels)


def fit_probe(x, y, num_classes, ridge):
    """A linear classifier (mean, std, weights) fitted by ridge least squares to one-hot ``y`` (255 skipped)."""
    keep = y < num_classes
    x, y = x[keep].double(), y[keep]
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    target = F.one_hot(y, num_classes).double()
    gram = z.T @ z + ridge * len(z) * torch.eye(z.shape[1], dtype=z.dtype)
    return mean, std, torch.linalg.solve(gram, z.T @ target)


def probe_miou(train, val, num_classes, ridge):
    """Val pixel mIoU (%) of the probe fitted on ``train`` = (features, labels), scored on ``val``."""
    mean, std, w = fit_probe(*train, num_classes, ridge)
    x, y = val
    z = torch.cat([(x.double() - mean) / std, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    evaluator = Evaluator(num_classes)
    evaluator.add_batch(y, (z @ w).argmax(1))
    return 100 * float(evaluator.Mean_Intersection_over_Union())


def run(args):
    outputs = Outputs.from_args(get_args_parser(), args, "probe_taps.py").check()
    results = []
    for path in args.checkpoint:
        model, saved, _ = load_model(path, "--checkpoint")
        crop = args.crop_size or saved.get("crop_size", 513)
        train, val = (tap_pixels(model, split_samples(args.dataset, s, crop), args.grid) for s in ("train", "val"))
        num_classes = model.num_classes
        row = {"checkpoint": path, "backbone": model.backbone_name, "crop_size": crop, "grid": args.grid,
               "taps": {tap: probe_miou((train[0][tap], train[1]), (val[0][tap], val[1]), num_classes, args.ridge)
                        for tap in TAPS}}
        results.append(row)
        print(f"{path} ({model.backbone_name}): " + ", ".join(f"{t} {m:.2f}" for t, m in row["taps"].items()))
    if args.output:
        outputs.write_json(args.output, {"checkpoints": results})
    return results


main = cli_main(run, CheckpointError, DatasetError)  # one-line errors, exit status 2


if __name__ == "__main__":
    main(get_args_parser().parse_args())
