"""Numbers that change only on purpose: a fixed-seed baseline and a fixed-seed AttnFD run (warm-up epoch, then a
student epoch) go through the real trainer, and what they are made of (the first epoch's augmented batches, the
initial weights, the first iterations' losses) must match the values stored in tests/reference/tripwire.json.

The tolerance separates a machine's rounding from a change of what a seed trains to: the same runs under AVX2
kernels (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2``, 1 thread) move them by
3e-7 (relative) at most, a change of the data order, the augmentation's draws, an initialisation, a loss or the
connectors' optimizer by 1e-3 or more.  The images are PNGs (lossless: no JPEG codec version in the numbers).  A
deliberate change updates the stored values in the same commit (``python tests/test_tripwire.py``), and its
message says so.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "tests" / "reference" / "tripwire.json"
TOLERANCE = 1e-5  # relative: AVX2 kernels and 1 thread moved these numbers by 3e-7 at most, a real change by > 1e-3
COMMON = ["--dataset", "synthetic", "--backbone", "mobilenet", "--base-size", "32", "--crop-size", "32",
          "--batch-size", "4", "--lr", "0.05", "--epochs", "2", "--workers", "0", "--no-pretrained", "--no-cuda",
          "--no-val", "--log-interval", "1", "--seed", "7"]


class Recorder:
    """A writer that keeps the per-iteration total losses the trainer logs."""

    def __init__(self):
        self.losses = []

    def add_scalar(self, name, value, step):
        if name == "train/total_loss_iter":
            self.losses.append(float(value))

    def close(self):
        pass


def write_data(folder):
    """A VOC-layout root of 12 train / 1 val images with deterministic content (PNG bytes under the .jpg names the
    reader expects: PIL reads them by content)."""
    from dataloaders.synthetic import CLASSES, make_sample

    root = Path(folder) / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"s{i}" for i in range(13)]
    for name in names:
        image, label = make_sample(rng, 32)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", format="PNG")
        Image.fromarray(label, mode="L").save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[:12]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text(names[12] + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return str(root)


def fingerprint(folder, monkeypatch=None):
    """What two fixed-seed runs (trained in ``folder``) are made of: the first epoch's augmented batches (sums of
    images and labels, in order), the student's initial weights (sum of |w|), and the losses of the iterations
    that no CPU's rounding moves: the baseline's first, and AttnFD's warm-up epoch and first student step.  Later
    iterations are left out: from-scratch training at lr 0.05 on 4 images turns a last-digit difference into
    percents within two steps (measured: 1e-6 -> 7e-4 -> 5e-2 between AMX and AVX2 kernels)."""
    import os

    from modeling import DeepLab
    from training import get_args_parser, resolve_args
    from training.main import fit, setup
    from utils.saver import save_atomic

    root = write_data(folder)
    if monkeypatch:
        monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", root)
    else:
        os.environ["ATTNFD_SYNTHETIC_ROOT"] = root
    torch.manual_seed(0)
    teacher = str(Path(folder) / "teacher.pth.tar")
    save_atomic({"state_dict": DeepLab(num_classes=7, backbone="resnet18").state_dict(),
                 "args": {"backbone": "resnet18"}}, teacher)
    out = {}
    for name, kd, extra, kept in (("baseline", False, [], 1), ("attnfd", True, ["--teacher_path", teacher], 4)):
        args = get_args_parser(kd).parse_args([*COMMON, *extra, "--run-dir", str(Path(folder) / "run")])
        run = setup(resolve_args(args, kd))
        out[f"{name}/init"] = sum(float(p.detach().abs().double().sum()) for p in run.model.parameters())
        if name == "baseline":
            run.train_loader.sampler.set_epoch(0)
            out["batches"] = [[float(b["image"].double().sum()), float(b["label"].double().sum())]
                              for b in run.train_loader]
        recorder = Recorder()
        run.writer = recorder
        fit(run)
        out[name] = recorder.losses[:kept]
    return out


def values(d):
    """The numbers of a fingerprint, flat, with their names."""
    for key, v in d.items():
        flat = [x for row in v for x in row] if isinstance(v, list) and v and isinstance(v[0], list) else \
            (v if isinstance(v, list) else [v])
        for i, x in enumerate(flat):
            yield f"{key}[{i}]", x


@pytest.mark.numerics
def test_a_fixed_seed_trains_to_the_stored_numbers(tmp_path, monkeypatch):
    stored = dict(values(json.loads(STORED.read_text())))
    got = dict(values(fingerprint(tmp_path, monkeypatch)))
    assert got.keys() == stored.keys() and len(got) == 13, sorted(got)
    for name, a in got.items():
        b = stored[name]
        assert abs(a - b) <= TOLERANCE * abs(b), (
            f"{name}: {a!r}, stored {b!r}. What a seed trains to has changed: if on purpose, run "
            f"`python tests/test_tripwire.py` and say so in the commit message")


if __name__ == "__main__":  # store today's values (a deliberate change)
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        numbers = fingerprint(tmp)
    STORED.write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {STORED}: {numbers}")
