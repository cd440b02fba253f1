"""predict.py as a user runs it: a folder of generated images of two sizes -> palette PNGs and overlays."""
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import save_random_checkpoint
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_predict_folder_writes_palette_masks_and_overlays_and_refuses_bad_images(tmp_path):
    ckpt = save_random_checkpoint(tmp_path / "student.pth.tar", backbone="mobilenet")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a": (40, 56), "b": (40, 56), "c": (33, 47)}  # two of one size (one batch), one odd size
    for stem, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{stem}.jpg")
    (images / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--checkpoint", str(ckpt), "--input", str(images),
                        "--output", str(out), "--no-cuda", "--flip"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(f.name for f in out.iterdir()) == sorted([f"{s}.png" for s in sizes] +
                                                           [f"{s}_overlay.png" for s in sizes])
    for stem, (h, w) in sizes.items():
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "P" and mask.size == (w, h)
        labels = np.asarray(mask)
        assert labels.min() >= 0 and labels.max() < 7
        assert Image.open(out / f"{stem}_overlay.png").size == (w, h)

    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    bad_out = tmp_path / "bad"
    p = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--checkpoint", str(ckpt), "--input",
                        str(images / "*.jpg"), "--output", str(bad_out), "--no-cuda"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "unreadable image" in p.stderr and "broken.jpg" in p.stderr
    assert "Traceback" not in p.stderr and not bad_out.exists()  # nothing written
