"""sweep.py and attention_maps.py: the real CLIs on a tiny generated dataset, plus the table arithmetic."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_random_checkpoint
from PIL import Image

import sweep
from dataloaders.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--dataset", "synthetic", "--base-size", "32", "--crop-size", "32", "--batch-size", "4",
          "--workers", "0", "--no-pretrained", "--no-cuda", "--epochs", "1"]


def cli(script, *args, env, cwd):
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_sweep_writes_the_tables_reports_failures_skips_finished_runs_and_attention_maps(tmp_path):
    root = generate(tmp_path / "data", n_train=8, n_val=2, size=32, seed=0)
    env = dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root, PYTHONUNBUFFERED="1")
    teacher = save_random_checkpoint(tmp_path / "teacher.pth.tar", "resnet18")
    runs = ["--run", "baseline", "train.py --backbone resnet18",
            "--run", "attnfd", f"train_kd.py --backbone resnet18 --teacher_path {teacher}",
            "--run", "broken", "train_kd.py --teacher_path missing-teacher.pth.tar"]
    p = cli("sweep.py", "--out", "sw", "--seeds", "1", "2", "--jobs", "2", *runs, "--", *COMMON, env=env, cwd=tmp_path)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]  # a failed run makes the sweep fail

    out = tmp_path / "sw"
    result = json.loads((out / "results.json").read_text())
    assert list(result["runs"]) == ["baseline", "attnfd", "broken"]
    for name in ("baseline", "attnfd"):
        assert set(result["runs"][name]) == {"1", "2"}
        assert all(0.0 <= v <= 1.0 for v in result["runs"][name].values())
        history = json.loads(next((out / "runs" / name / "seed1").rglob("history.json")).read_text())
        assert result["runs"][name]["1"] == pytest.approx(max(h["val"]["mIoU"] for h in history))
    assert result["runs"]["broken"] == {"1": None, "2": None}
    assert set(result["failed"]) == {"broken"} and "missing-teacher.pth.tar" in result["failed"]["broken"]["1"]
    assert result["commands"]["attnfd"].startswith("train_kd.py") and "--epochs 1" in result["common"]
    # the seed and the run folder are set per run
    args = json.loads((next((out / "runs" / "attnfd" / "seed2").rglob("result.json"))).read_text())["cmd"]
    assert args[args.index("--seed") + 1] == "2" and args[args.index("--run-dir") + 1].endswith("seed2")

    md = (out / "results.md").read_text()
    assert md.splitlines()[0].startswith("| run | n | mIoU % mean ± std | per seed (1 2) | Δ vs baseline")
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "| 2 |" in rows["attnfd"] and "/2 |" in rows["attnfd"]
    assert "fail fail" in rows["broken"] and "FAILED `broken` seed 1" in md
    with Image.open(out / "results.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200

    # the same command again: finished runs are skipped (and keep their values), the failed one is retried
    mtime = (out / "runs" / "baseline" / "seed1" / "result.json").stat().st_mtime
    p = cli("sweep.py", "--out", "sw", "--seeds", "1", "2", *runs, "--", *COMMON, env=env, cwd=tmp_path)
    assert p.returncode == 1 and p.stdout.count("skipped, done before") == 4
    assert (out / "runs" / "baseline" / "seed1" / "result.json").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text())["runs"] == result["runs"]

    # --report-only tabulates what finished (seed 3 never ran) and trains nothing
    p = cli("sweep.py", "--out", "sw", "--seeds", "1", "2", "3", "--report-only", *runs, "--", *COMMON, env=env,
            cwd=tmp_path)
    assert p.returncode == 0 and "4 of 9 runs finished" in p.stdout
    assert not (out / "runs" / "baseline" / "seed3").exists()
    assert "| baseline | 2 |" in (out / "results.md").read_text()

    # attention maps of the distilled student: one PNG per input image
    student = next((out / "runs" / "attnfd" / "seed1").rglob("model_best.pth.tar"))
    images = tmp_path / "images"
    images.mkdir()
    for name in ("synth_00000.jpg", "synth_00008.jpg"):
        (images / name).write_bytes((Path(root) / "JPEGImages" / name).read_bytes())
    p = cli("attention_maps.py", "--student", str(student), "--teacher", str(teacher), "--input", str(images),
            "--output", "maps", env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "teacher attention: checkpoint" in p.stdout
    assert sorted(os.listdir(tmp_path / "maps")) == ["synth_00000.png", "synth_00008.png"]
    with Image.open(tmp_path / "maps" / "synth_00000.png") as im:
        assert im.size[0] > 4 * im.size[1]  # the image and six maps in a row


def test_table_paired_differences_wins_and_failures():
    result = {"seeds": [1, 2, 3], "common": "--epochs 2", "commands": {"a": "train.py", "b": "train_kd.py"},
              "runs": {"a": {"1": 0.30, "2": 0.40, "3": 0.35}, "b": {"1": 0.32, "2": 0.39, "3": None}},
              "failed": {"b": {"3": "exit 2: error: boom"}}}
    rows = sweep.table(result).splitlines()
    assert rows[2] == "| a | 3 | 35.00 ± 5.00 | 30.00 40.00 35.00 |  |  |"
    # b vs a over the seeds both finished: +2 and -1 points -> +0.50 ± 2.12, won 1 of 2
    assert rows[3] == "| b | 2 | 35.50 ± 4.95 | 32.00 39.00 fail | +0.50 ± 2.12 | 1/2 |"
    assert "- FAILED `b` seed 3: exit 2: error: boom" in rows


@pytest.mark.parametrize("argv, message", [
    (["--out", "o", "--seeds", "1", "--run", "a b", "train.py"], "use letters"),
    (["--out", "o", "--seeds", "1", "--run", "a", "eval.py --checkpoint x"], "must start with train.py"),
    (["--out", "o", "--seeds", "1", "--run", "a", "train.py", "--", "--seed", "3"], "--seed is set by sweep.py"),
    (["--out", "o", "--seeds", "1", "1", "--run", "a", "train.py"], "--seeds must be unique"),
    (["--out", "o", "--seeds", "1", "--run", "a", "train.py", "--run", "a", "train_kd.py"], "names must be unique"),
])
def test_sweep_rejects_bad_grids(argv, message):
    from utils.cli import UsageError

    with pytest.raises(UsageError, match=message):
        sweep.parse(argv)


def test_a_finished_cell_of_another_command_is_refused_or_set_aside_never_deleted(tmp_path):
    args = sweep.parse(["--out", str(tmp_path), "--seeds", "1", "2", "--run", "a", "train.py --lr 0.1"])
    cells = [("a", "train.py --lr 0.1", 1), ("a", "train.py --lr 0.1", 2)]
    same, _ = sweep.command_for(args, *cells[0])
    for seed, cmd in ((1, same[1:]), (2, ["train.py", "--lr", "0.2"])):  # seed 2 finished with another command
        cell = tmp_path / "runs" / "a" / f"seed{seed}"
        cell.mkdir(parents=True)
        (cell / "result.json").write_text(json.dumps({"cmd": cmd, "best_mIoU": 0.5}))
        (cell / "checkpoint.pth.tar").write_text("weights")
    assert sweep.changed_cells(args, cells) == [("a", 2, str(tmp_path / "runs" / "a" / "seed2"))]
    with pytest.raises(sweep.UsageError, match="--run a seed 2 finished in .* with another command"):
        sweep.main(args)
    assert (tmp_path / "runs/a/seed2/checkpoint.pth.tar").read_text() == "weights"
    moved = sweep.set_aside(str(tmp_path / "runs" / "a" / "seed2"))  # what --rerun-changed does first
    assert moved.endswith("seed2.old-0") and (Path(moved) / "checkpoint.pth.tar").read_text() == "weights"
    assert sweep.finished(same, str(tmp_path / "runs" / "a" / "seed1"))["skipped"]
