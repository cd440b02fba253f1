"""attention_maps.py --stats: the maps' statistics on known maps, and through the CLI on generated data."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import save_random_checkpoint
from PIL import Image

from attention_maps import map_stats, mean_stats
from dataloaders.synthetic import generate
from modeling import TAPS

ROOT = Path(__file__).resolve().parents[1]


def test_map_stats_on_known_maps():
    label = np.zeros((8, 8), np.uint8)
    label[2:4, 2:6] = 3  # 8 object pixels
    label[0, 0] = 255  # ignored: neither object nor background
    teacher = 1.0 + (label == 3)  # twice the attention on objects
    maps = {tap: teacher for tap in TAPS}
    same = map_stats(maps, {tap: 3 * teacher for tap in TAPS}, label)["backbone"]
    assert same["correlation"] == pytest.approx(1.0)
    assert same["teacher_object_lift"] == pytest.approx(2.0) and same["student_object_lift"] == pytest.approx(2.0)
    assert same["teacher_variation"] == pytest.approx(same["student_variation"])
    assert same["teacher_variation"] == pytest.approx(teacher.std() / teacher.mean())
    opposite = map_stats(maps, {tap: 10 - teacher for tap in TAPS}, label)["aspp"]
    assert opposite["correlation"] == pytest.approx(-1.0) and opposite["student_object_lift"] < 1
    flat = map_stats(maps, {tap: np.ones((8, 8)) for tap in TAPS})["decoder"]
    assert flat["student_variation"] == 0 and np.isnan(flat["correlation"]) and "teacher_object_lift" not in flat
    # the mean over images skips an undefined value instead of turning the mean into nan
    undefined = map_stats(maps, {tap: np.ones((8, 8)) for tap in TAPS}, label)
    assert mean_stats([map_stats(maps, maps, label), undefined])["backbone"]["correlation"] == pytest.approx(1.0)


def test_cli_writes_the_stats_and_never_writes_over_its_inputs(tmp_path, capsys):
    root = Path(generate(tmp_path / "data", n_train=2, n_val=2, size=32, seed=0))
    student = save_random_checkpoint(tmp_path / "student.pth.tar")
    teacher = shutil.copy(student, tmp_path / "teacher.pth.tar")  # the same network: its maps are the student's
    labels = root / "SegmentationClass"
    env = dict(os.environ, OMP_NUM_THREADS="2")

    def cli(*args):
        return subprocess.run([sys.executable, str(ROOT / "attention_maps.py"), "--student", str(student),
                               "--teacher", str(teacher), "--input", str(root / "JPEGImages"), *args], env=env,
                              capture_output=True, text=True, timeout=300)

    p = cli("--output", str(tmp_path / "maps"), "--labels", str(labels), "--stats", str(tmp_path / "stats.json"))
    assert p.returncode == 0, p.stderr[-2000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["images"] == len(list((root / "JPEGImages").iterdir())) == 4
    assert list(stats["taps"]) == list(TAPS)
    for row in stats["taps"].values():
        assert row["correlation"] == pytest.approx(1.0, abs=1e-6)
        assert row["teacher_variation"] == pytest.approx(row["student_variation"]) and row["teacher_variation"] > 0
        assert row["teacher_object_lift"] == pytest.approx(row["student_object_lift"])
        assert row["teacher_object_lift"] > 0
    assert "backbone: teacher_variation" in p.stdout
    maps = sorted((tmp_path / "maps").iterdir())  # one PNG per input image: the image and six maps in a row
    assert [m.name for m in maps] == sorted(f.stem + ".png" for f in (root / "JPEGImages").iterdir())
    with Image.open(maps[0]) as im:
        assert im.size[0] > 4 * im.size[1]

    before = {f: f.read_bytes() for f in [student, *labels.iterdir()]}
    import attention_maps  # the refusals in this process: the same main as the script's

    for args, message in [(["--output", str(labels), "--labels", str(labels), "--stats", str(tmp_path / "s.json")],
                           "--output"),
                          (["--output", str(tmp_path / "m2"), "--stats", str(student)], "--stats"),
                          (["--output", str(tmp_path / "m3"), "--labels", str(labels)], "--labels")]:
        argv = ["--student", str(student), "--teacher", str(teacher), "--input", str(root / "JPEGImages"), *args]
        with pytest.raises(SystemExit) as exit_:
            attention_maps.main(attention_maps.get_args_parser().parse_args(argv))
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert {f: f.read_bytes() for f in before} == before
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "m2").exists()
