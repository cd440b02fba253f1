"""Round 3 of "nothing lost" ([15/18]) beside the table and the generated cases (test_bad_input.py,
test_outputs.py): what must work (EXIF photos read as shown, an empty val split with --no-val, a full disk on a
fresh run, a double Ctrl-C), and the scripts checking their arguments before they train anything."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import save_random_checkpoint
from PIL import Image

from dataloaders.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--dataset", "synthetic", "--base-size", "32", "--crop-size", "32", "--batch-size", "4", "--workers", "0",
        "--no-pretrained", "--no-cuda"]
ORIENTATION = 0x0112


def sideways_photo(path):
    """A JPEG stored 40 wide x 20 high, its left quarter white, tagged "rotate 90° clockwise to show" (EXIF
    orientation 6): shown 20 wide x 40 high with the white band on top."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[ORIENTATION] = 6
    im.save(path, exif=exif, quality=95)
    return path


def test_an_exif_rotated_photo_is_read_as_shown_for_training_and_for_prediction(tmp_path):
    from dataloaders.datasets.pascal import voc_dataset
    from dataloaders.images import read_rgb
    from dataloaders.transforms import SegmentationPreset

    rgb = read_rgb(str(sideways_photo(tmp_path / "photo.jpg")))
    assert rgb.shape == (40, 20, 3) and rgb[:8].mean() > 200 and rgb[-20:].mean() < 30
    # in a dataset, the label drawn on the photo as shown (20 x 40) matches it (stored, it would not)
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    sideways_photo(root / "JPEGImages" / "a.jpg")
    label = np.zeros((40, 20), np.uint8)
    label[:10] = 1  # the white band, as shown
    Image.fromarray(label, mode="L").save(root / "SegmentationClass" / "a.png")
    for split in ("train", "val"):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("a\n")
    image, loaded = voc_dataset(str(root), "val", SegmentationPreset(False, 40, 40, 0)).load(0)
    assert image.shape[:2] == loaded.shape == (40, 20) and image[:8].mean() > 200
    # predict.py writes the mask the way the photo is shown
    ckpt = save_random_checkpoint(tmp_path / "model.pth.tar", "mobilenet")
    p = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--checkpoint", str(ckpt), "--input",
                        str(tmp_path / "photo.jpg"), "--output", str(tmp_path / "out"), "--no-cuda"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    with Image.open(tmp_path / "out" / "photo.png") as mask:
        assert mask.size == (20, 40)


def test_no_val_with_an_empty_val_split_trains(tmp_path, monkeypatch):
    from training import get_args_parser, main

    root = generate(tmp_path / "data", n_train=4, n_val=1, size=32, seed=0)
    (Path(root) / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", root)
    run = main(get_args_parser().parse_args([*DATA, "--backbone", "mobilenet", "--epochs", "1", "--no-val",
                                             "--run-dir", str(tmp_path / "run")]))
    assert run.state.epoch == 1 and os.path.isfile(os.path.join(run.experiment_dir, "checkpoint.pth.tar"))
    train = run.state.history[0]["train"]  # the epoch's cost: wall seconds, iterations, FLOPs of a step
    assert train["seconds"] > 0 and train["iterations"] == 1 and train["flops_per_iteration"] > 1e8


def limit_file_size():
    """A disk that fills up: writes past 2 MB fail (EFBIG) instead of killing the process."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, 2 * 2**20))


@pytest.mark.slow
def test_a_full_disk_on_a_fresh_run_says_nothing_was_saved_and_leaves_no_folder(tmp_path):
    root = generate(tmp_path / "data", n_train=4, n_val=1, size=32, seed=0)
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "--backbone", "mobilenet", *DATA, "--epochs", "1",
                        "--run-dir", str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root), preexec_fn=limit_file_size)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "cannot write checkpoint" in errors[0] and "File too large" in errors[0]  # not torch's "unexpected pos"
    assert "nothing was saved" in errors[0] and "intact" not in errors[0]
    assert not (tmp_path / "run").exists()  # no half-made experiment folder, nor the folders above it


@pytest.mark.slow
def test_a_second_quick_ctrl_c_stops_at_once_without_a_traceback_or_a_half_made_run(tmp_path):
    root = generate(tmp_path / "data", n_train=16, n_val=1, size=32, seed=0)
    p = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--backbone", "mobilenet", *DATA, "--epochs", "50",
                          "--run-dir", str(tmp_path / "run")], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root,
                                                                     PYTHONUNBUFFERED="1"))
    deadline = time.time() + 300
    while "Starting Epoch" not in (line := p.stdout.readline()) and time.time() < deadline:
        assert line or p.poll() is None, p.stderr.read()[-2000:]
    p.send_signal(signal.SIGINT)
    time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-2000:]
    for exp in (tmp_path / "run").rglob("experiment_*"):  # a folder stays only with a complete checkpoint in it
        from utils.saver import load_file

        assert load_file(str(exp / "checkpoint.pth.tar"))["epoch"] >= 0


def script(name, *args, **env):
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("name, args, env, message", [
    ("methods.sh", [], {"ROWS": "baseline bogus"}, "unknown row 'bogus'"),
    ("study.sh", [], {"TABLES": "easy bogus"}, "unknown table 'bogus'"),
    ("study.sh", [], {"SEEDS": "1 x"}, "'x' is not a seed"),
    ("study.sh", [], {"SEEDS": "1 1"}, "give each seed once"),
    ("methods.sh", [], {"JOBS": "0"}, "JOBS=0"),
    ("paper.sh", ["pascal"], {"SEEDS": "1 two"}, "'two' is not a seed"),
    ("paper.sh", ["pascal"], {"DRY_RUN": "maybe"}, "DRY_RUN=maybe"),
    ("paper.sh", ["pascal"], {"DRY_RUN": "0", "TEACHER": "absent.pth.tar"}, "no teacher at absent.pth.tar"),
])
def test_the_scripts_check_their_arguments_before_anything_trains(tmp_path, name, args, env, message):
    """One line, exit 2, and nothing made: no data, no teacher (they used to train a teacher first)."""
    out = tmp_path / "out"
    p = script(name, *args, str(out), **env)
    assert p.returncode == 2 and message in p.stderr and not p.stdout.strip(), p.stderr[-1000:] + p.stdout[-500:]
    assert not out.exists()
