"""probe_taps.py: the linear probe on known features, and the CLI on a generated dataset."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import save_random_checkpoint

from dataloaders.synthetic import generate
from probe_taps import probe_miou

ROOT = Path(__file__).resolve().parents[1]


def test_probe_reads_labels_linearly_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y_train, y_val = torch.randint(0, 5, (2000,), generator=g), torch.randint(0, 5, (500,), generator=g)
    y_train[:20] = 255  # ignored pixels take no part in the fit
    mix = torch.randn(5, 12, generator=g)  # classes as directions in a 12-channel feature space

    def features(y):
        return torch.nn.functional.one_hot(y.clamp(max=4), 5).float() @ mix + 0.1 * torch.randn(len(y), 12,
                                                                                                 generator=g)

    assert probe_miou((features(y_train), y_train), (features(y_val), y_val), 5, 1e-3) > 99
    noise = probe_miou((torch.randn(2000, 12, generator=g), y_train), (torch.randn(500, 12, generator=g), y_val),
                       5, 1e-3)
    assert noise < 30


def test_cli_writes_one_row_per_checkpoint_and_refuses_to_overwrite_its_input(tmp_path):
    root = generate(tmp_path / "data", n_train=4, n_val=2, size=32, seed=0)
    ckpt = save_random_checkpoint(tmp_path / "student.pth.tar")
    env = dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root, OMP_NUM_THREADS="2")
    cmd = [sys.executable, str(ROOT / "probe_taps.py"), "--checkpoint", str(ckpt), "--crop-size", "32",
           "--grid", "8"]
    p = subprocess.run(cmd + ["--output", str(tmp_path / "probe.json")], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "probe.json").read_text())["checkpoints"]
    assert len(rows) == 1 and rows[0]["backbone"] == "resnet18" and rows[0]["grid"] == 8
    assert set(rows[0]["taps"]) == {"backbone", "aspp", "decoder"}
    assert all(0 <= m <= 100 for m in rows[0]["taps"].values())
    before = ckpt.read_bytes()
    p = subprocess.run(cmd + ["--output", str(ckpt)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.startswith("error: --output") and ckpt.read_bytes() == before
