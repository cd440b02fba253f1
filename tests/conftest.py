import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT / "tests" / "reference"  # copy of the published checkpoint key sets (keys, shapes)

THREADS = int(os.environ.get("ATTNFD_TEST_THREADS", min(2, os.cpu_count() or 1)))  # .ci/run's second leg: 1
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _threads():
    """Tests that compare against 1-thread worker processes set 1 thread; the next test gets them back."""
    yield
    torch.set_num_threads(THREADS)


def reference_state_dict(backbone, seed=0, drop_attention=False):
    """A deterministic state dict with exactly the published checkpoint's keys and shapes."""
    shapes = json.loads((REFERENCE / f"keys_{backbone}.json").read_text())
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if drop_attention and ".cbam." in k:
            continue
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.05
    return sd


@pytest.fixture
def ref_sd():
    return reference_state_dict


def save_random_checkpoint(path, backbone="resnet18", num_classes=7, output_stride=16, label_assisted=False):
    """A seeded, randomly initialised DeepLab checkpoint that records its backbone (and a non-default stride, and
    ``label_assisted``: LAD's teacher, with a label input channel)."""
    from modeling import DeepLab
    from utils.saver import save_atomic

    torch.manual_seed(0)
    args = {"backbone": backbone, **({"out_stride": output_stride} if output_stride != 16 else {}),
            **({"label_assisted": True} if label_assisted else {})}
    save_atomic({"state_dict": DeepLab(num_classes=num_classes, backbone=backbone, output_stride=output_stride,
                                       label_channel=label_assisted).state_dict(), "args": args}, str(path))
    return path
