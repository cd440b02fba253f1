"""scripts/paper.sh and scripts/methods.sh run end to end, not only dry: with SMOKE=1 (tiny generated data, 1 epoch,
no ImageNet weights) each trains every row of its grid and writes its results table."""
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import save_random_checkpoint

from dataloaders.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def bash(script, *args, env, cwd):
    p = subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def rows_of(table):
    return [line.split("|")[1].strip() for line in table.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| run")]


def test_paper_sh_trains_the_papers_grid_to_its_table(tmp_path):
    """Generated VOC-format data as Pascal VOC: LAD's label-assisted teacher, then the seven rows, the table with
    the paper's number beside each."""
    root = generate(tmp_path / "voc", n_train=8, n_val=2, size=32, seed=0)
    teacher = save_random_checkpoint(tmp_path / "teacher.pth.tar", "resnet18")  # its classes.txt: 7 classes
    env = dict(os.environ, ATTNFD_PASCAL_ROOT=root, SMOKE="1", SEEDS="1", JOBS="2", TEACHER=str(teacher),
               PYTHONUNBUFFERED="1")
    bash("paper.sh", "pascal", str(tmp_path / "paper"), env=env, cwd=tmp_path)
    out = tmp_path / "paper"
    assert (out / "lad-teacher" / "pascal" / "lad-teacher" / "model_best.pth.tar").is_file()
    assert rows_of(out / "results.md") == ["baseline", "kd", "overhaul", "dist", "cirkd", "lad", "attnfd"]
    result = json.loads((out / "results.json").read_text())
    assert result["failed"] == {} and all(v["1"] is not None for v in result["runs"].values())
    assert result["paper"]["attnfd"] == 73.09 and "--epochs 1" in result["common"]


def test_methods_sh_trains_its_rows_and_their_equal_compute_rows_to_the_table(tmp_path):
    """The study's easy task and its teacher, LAD's label-assisted teacher, three rows (a plain, a distilled and the
    LAD one: every kind of row the script builds), and with MATCH=flops each distilled row again for the iterations
    that cost the baseline's FLOPs (with --iterations: the last epoch cut short and validated)."""
    env = dict(os.environ, SMOKE="1", SEEDS="1", JOBS="2", MATCH="flops", ROWS="baseline kd lad", PYTHONUNBUFFERED="1")
    bash("methods.sh", str(tmp_path / "study"), env=env, cwd=tmp_path)
    table = tmp_path / "study" / "budget-flops.md"
    assert rows_of(table) == ["baseline", "kd", "kd.flops", "lad", "lad.flops"]
    r = json.loads((tmp_path / "study" / "budget-flops.json").read_text())
    assert r["failed"] == {} and all(v["1"] is not None for v in r["runs"].values())
    assert "--lad_lambda 3" in r["commands"]["lad"] and "lad-teacher-easy" in r["commands"]["lad"]
    per_iteration = r["flops"]["kd"]["1"] / r["iterations"]["kd"]["1"]
    budget = round(r["flops"]["baseline"]["1"] / per_iteration)  # KD's teacher forward: fewer iterations
    assert r["iterations"]["baseline"]["1"] == r["iterations"]["kd"]["1"] == 2 and 1 <= budget <= 2
    assert r["budget"]["ref"] == "baseline" and r["budget"]["iterations"]["kd.flops"] == budget
    assert r["iterations"]["kd.flops"]["1"] == budget and r["commands"]["kd.flops"].endswith(f"--iterations {budget}")
    assert abs(r["flops"]["kd.flops"]["1"] - r["flops"]["baseline"]["1"]) <= per_iteration / 2
    cell = tmp_path / "study" / "methods" / "runs" / "kd.flops" / "seed1"
    history = json.loads(next(cell.rglob("history.json")).read_text())
    assert [h["train"]["iterations"] for h in history] == [budget] and "val" in history[-1]  # validated
    assert f"`kd.flops` {budget}" in table.read_text()
