"""sweep.py: the real CLI on a tiny generated dataset, plus the table arithmetic."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import save_random_checkpoint
from PIL import Image

import sweep
from dataloaders.synthetic import generate
from utils import tables as sweep_tables
from utils.cells import set_aside
from utils.cli import UsageError

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--dataset", "synthetic", "--base-size", "32", "--crop-size", "32", "--batch-size", "4",
          "--workers", "0", "--no-pretrained", "--no-cuda", "--epochs", "1"]


def cli(script, *args, env, cwd):
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_sweep_writes_the_tables_reports_failures_and_skips_finished_runs(tmp_path):
    root = generate(tmp_path / "data", n_train=8, n_val=2, size=32, seed=0)
    env = dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root, PYTHONUNBUFFERED="1")
    teacher = save_random_checkpoint(tmp_path / "teacher.pth.tar", "resnet18")
    save_random_checkpoint(tmp_path / "five-classes.pth.tar", "resnet18", num_classes=5)
    # a teacher that is not there is refused before anything trains
    missing = ["--run", "broken", "train_kd.py --teacher_path missing-teacher.pth.tar"]
    p = cli("sweep.py", "--out", "sw", "--seeds", "1", *missing, "--", *COMMON, env=env, cwd=tmp_path)
    assert p.returncode == 2 and "missing-teacher.pth.tar: no checkpoint there" in p.stderr
    assert not (tmp_path / "sw").exists()
    runs = ["--run", "baseline", "train.py --backbone resnet18",
            "--run", "attnfd", f"train_kd.py --backbone resnet18 --teacher_path {teacher}",
            "--run", "broken", "train_kd.py --teacher_path five-classes.pth.tar"]  # found when the run starts
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
    assert set(result["failed"]) == {"broken"} and "five-classes.pth.tar" in result["failed"]["broken"]["1"]
    assert result["commands"]["attnfd"].startswith("train_kd.py") and "--epochs 1" in result["common"]
    # the seed and the run folder are set per run
    args = json.loads((next((out / "runs" / "attnfd" / "seed2").rglob("result.json"))).read_text())["cmd"]
    assert args[args.index("--seed") + 1] == "2" and args[args.index("--run-dir") + 1].endswith("seed2")

    md = (out / "results.md").read_text()
    assert md.splitlines()[0].startswith("| run | n | best-epoch mIoU % | final-epoch mIoU % | per seed, best (1 2) | "
                                         "Δ best vs baseline")
    # each run's cost: wall seconds of its training epochs and FLOPs (machine-independent), and the ratio column
    record = json.loads(next((out / "runs" / "attnfd" / "seed1").rglob("result.json")).read_text())
    assert record["train_seconds"] > 0 and record["iterations"] == 2 and record["flops"] > 0
    assert md.splitlines()[0].endswith("| cost x baseline (time / FLOPs) |")
    cost_cells = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in md.splitlines()[2:5]}
    flops = json.loads((out / "results.json").read_text())["flops"]
    mean = {n: sum(flops[n].values()) / len(flops[n]) for n in ("baseline", "attnfd")}
    assert cost_cells["baseline"] == "1.00 / 1.00"
    assert cost_cells["attnfd"].endswith(f" / {mean['attnfd'] / mean['baseline']:.2f}")  # its warm-up epoch only
    assert result["final"]["attnfd"]["1"] == pytest.approx(history[-1]["val"]["mIoU"])  # its last epoch
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "| 2 |" in rows["attnfd"] and "/2 |" in rows["attnfd"]
    assert "fail fail" in rows["broken"] and "FAILED `broken` seed 1" in md
    with Image.open(out / "results.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200

    # the same command again: finished runs are skipped (and keep their values), the failed one is retried
    mtime = (out / "runs" / "baseline" / "seed1" / "result.json").stat().st_mtime
    p = cli("sweep.py", "--out", "sw", "--seeds", "1", "2", "--jobs", "2", *runs, "--", *COMMON, env=env, cwd=tmp_path)
    assert p.returncode == 1 and p.stdout.count("skipped, done before") == 4
    assert (out / "runs" / "baseline" / "seed1" / "result.json").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text())["runs"] == result["runs"]

    # --report-only tabulates what finished (seed 3 never ran) and trains nothing
    p = cli("sweep.py", "--out", "sw", "--seeds", "1", "2", "3", "--report-only", *runs, "--", *COMMON, env=env,
            cwd=tmp_path)
    assert p.returncode == 0 and "4 of 9 runs finished" in p.stdout
    assert not (out / "runs" / "baseline" / "seed3").exists()
    assert "| baseline | 2 |" in (out / "results.md").read_text()


def test_table_paired_differences_their_tests_final_epochs_wins_and_failures():
    result = {"seeds": [1, 2, 3], "common": "--epochs 2", "commands": {"a": "train.py", "b": "train_kd.py"},
              "runs": {"a": {"1": 0.30, "2": 0.40, "3": 0.35}, "b": {"1": 0.32, "2": 0.39, "3": None}},
              "final": {"a": {"1": 0.29, "2": 0.38, "3": 0.35}, "b": {"1": 0.30, "2": 0.39, "3": None}},
              "failed": {"b": {"3": "exit 2: error: boom"}}}
    rows = sweep.table(result).splitlines()
    assert rows[2] == "| a | 3 | 35.00 ± 5.00 | 34.00 ± 4.58 | 30.00 40.00 35.00 |  |  |  |  |  |"
    # b vs a over the seeds both finished: +2 and -1 points -> +0.50 ± 2.12; t(0.975, 1) = 12.706:
    # CI 0.5 ± 12.706 x 2.121 / sqrt(2) = [-18.56, +19.56]; t-test p = 0.795; Wilcoxon (n 2, exact) p = 1
    # final epochs: +1 and +1 -> +1.00
    assert rows[3] == ("| b | 2 | 35.50 ± 4.95 | 34.50 ± 6.36 | 32.00 39.00 fail | +0.50 ± 2.12 | [-18.56, +19.56] | "
                       "0.795 / 1.000 | 1/2 | +1.00 |")
    assert "- FAILED `b` seed 3: exit 2: error: boom" in rows
    half, t, w = sweep_tables.paired_tests([0.01, 0.02, 0.03, 0.02, 0.04])
    assert half == pytest.approx(2.776445 * 0.0114018 / 5 ** 0.5, rel=1e-4)
    # t = 0.024 / (0.0114018 / sqrt 5) = 4.707 on 4 df -> p 0.00926; Wilcoxon: 5 of 5 positive -> 2 / 2^5
    assert t == pytest.approx(0.00926, abs=1e-5) and w == pytest.approx(0.0625)


@pytest.mark.parametrize("argv, message", [
    (["--out", "o", "--seeds", "1", "--run", "a b", "train.py"], "use letters"),
    (["--out", "o", "--seeds", "1", "--run", "a", "eval.py --checkpoint x"], "must start with train.py"),
    (["--out", "o", "--seeds", "1", "--run", "a", "train.py", "--", "--seed", "3"], "--seed is set by sweep.py"),
    (["--out", "o", "--seeds", "1", "1", "--run", "a", "train.py"], "--seeds must be unique"),
    (["--out", "o", "--seeds", "1", "--run", "a", "train.py", "--run", "a", "train_kd.py"], "names must be unique"),
    (["--out", "o", "--seeds", "1", "--match-budget", "b", "--run", "a", "train.py"],
     "--match-budget b: give the name"),
    (["--out", "o", "--seeds", "1", "--match-budget", "a", "--run", "a", "train.py"], "beside at least one other row"),
    (["--out", "o", "--seeds", "1", "--match-budget", "a", "--run", "a", "train.py", "--run", "b", "train.py", "--",
      "--iterations", "9"], "remove --iterations"),
    (["--out", "o", "--seeds", "1", "--match-budget", "a", "--run", "a", "train.py", "--run", "b", "train.py",
      "--run", "b.flops", "train.py"], "already is one"),
])
def test_sweep_rejects_bad_grids(argv, message):
    from utils.cli import UsageError

    with pytest.raises(UsageError, match=message):
        sweep.parse(argv)


def test_a_cell_of_another_command_is_refused_or_set_aside_never_deleted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = ["--seeds", "1", "2", "--run", "a", "train.py --lr 0.1"]
    args = sweep.parse(["--out", "sw", *grid])
    same, _ = sweep.command_for(args, "a", "train.py --lr 0.1", 1)
    for seed, cmd in ((1, same[1:]), (2, ["train.py", "--lr", "0.2"])):  # seed 2 finished with another command
        cell = tmp_path / "sw" / "runs" / "a" / f"seed{seed}"
        cell.mkdir(parents=True)
        (cell / "result.json").write_text(json.dumps({"cmd": cmd, "best_mIoU": 0.5}))
        (cell / "checkpoint.pth.tar").write_text("weights")
    assert [sweep.plan(args, "a", "train.py --lr 0.1", s).action for s in (1, 2)] == ["skip", "changed"]
    # --out spelled as an absolute path: the same cells, the same commands (it was refused as changed)
    absolute = sweep.parse(["--out", str(tmp_path / "sw"), *grid])
    assert [sweep.plan(absolute, "a", "train.py --lr 0.1", s).action for s in (1, 2)] == ["skip", "changed"]
    with pytest.raises(UsageError, match="--run a seed 2 in .* finished or started with another command"):
        sweep.main(args)
    assert (tmp_path / "sw/runs/a/seed2/checkpoint.pth.tar").read_text() == "weights"
    moved = set_aside(str(tmp_path / "sw" / "runs" / "a" / "seed2"))  # what --rerun-changed does first
    assert moved.endswith("seed2.old-0") and (Path(moved) / "checkpoint.pth.tar").read_text() == "weights"


def test_a_row_flag_repeated_among_the_common_args_and_a_bad_row_value_are_refused_before_any_training():
    with pytest.raises(UsageError, match="--run a sets --lr and the common args set it too"):
        sweep.parse(["--out", "o", "--seeds", "1", "--run", "a", "train.py --lr 0.1", "--", "--lr", "0.2"])
    with pytest.raises(UsageError, match="--run b sets --teacher_path and the common"):  # the other spelling
        sweep.parse(["--out", "o", "--seeds", "1", "--run", "b", "train_kd.py --teacher-path t", "--",
                     "--teacher_path", "u"])
    with pytest.raises(UsageError, match="--run a: argument --lr: -1 must be above 0"):
        sweep.parse(["--out", "o", "--seeds", "1", "--run", "a", "train.py --lr -1"])
    with pytest.raises(UsageError, match="--run k: --cirkd_pool 64: the decoder tap"):
        sweep.parse(["--out", "o", "--seeds", "1", "--run", "k", "train_kd.py --cirkd_lambda 1 --cirkd_pool 64",
                     "--", "--crop-size", "64"])


def test_table_cost_column_is_each_rows_mean_cost_over_the_first_rows():
    result = {"seeds": [1, 2], "common": "", "commands": {"a": "train.py", "b": "train_kd.py"},
              "runs": {"a": {"1": 0.30, "2": 0.40}, "b": {"1": 0.32, "2": 0.41}}, "failed": {},
              "train_seconds": {"a": {"1": 10.0, "2": 12.0}, "b": {"1": 30.0, "2": 36.0}},
              "flops": {"a": {"1": 1e12, "2": 1e12}, "b": {"1": 2.5e12, "2": None}}}
    rows = sweep.table(result).splitlines()
    assert rows[0].endswith("| cost x a (time / FLOPs) |") and rows[1].count("---") == 11
    assert rows[2].endswith("| 1.00 / 1.00 |") and rows[3].endswith("| 3.00 / 2.50 |")
    del result["train_seconds"], result["flops"]
    assert "cost" not in sweep.table(result)  # records from before costs were measured: no column


def test_table_with_the_papers_numbers_beside_the_measured_ones():
    result = {"seeds": [1, 2], "common": "", "commands": {"a": "train.py", "b": "train_kd.py", "c": "train_kd.py"},
              "runs": {"a": {"1": 0.30, "2": 0.40}, "b": {"1": 0.32, "2": 0.41}, "c": {"1": 0.31, "2": 0.39}},
              "failed": {}, "paper": {"a": 67.5, "b": 73.09}}
    rows = sweep.table(result).splitlines()
    assert rows[0].endswith("| paper mIoU % | paper Δ |") and rows[1].count("---") == 12
    assert rows[2].endswith("|  |  |  |  |  | 67.50 |  |") and rows[3].endswith("| 2/2 | - | 73.09 | +5.59 |")
    assert "| +1.50 ± 0.71 |" in rows[3]
    assert rows[4].endswith("| - |  |")  # no published number for c
    with pytest.raises(sweep.UsageError, match="--paper z 70"):
        sweep.parse(["--out", "o", "--seeds", "1", "--run", "a", "train.py", "--paper", "z", "70"])
    with pytest.raises(sweep.UsageError, match="--paper a 700"):
        sweep.parse(["--out", "o", "--seeds", "1", "--run", "a", "train.py", "--paper", "a", "700"])


def test_compare_pairs_a_row_with_another_and_table_writes_beside_shared_cells(tmp_path):
    """--compare b-amp b: that row's paired columns are against b (a "vs" column names it); --table PREFIX: the
    tables are written there from the finished cells of --out, which stay where they are."""
    seeds = {"a": (0.30, 0.40), "a-amp": (0.31, 0.38), "b": (0.36, 0.42), "b-amp": (0.35, 0.40)}
    argv = ["--out", str(tmp_path / "runs-dir"), "--seeds", "1", "2", "--report-only", "--table", str(tmp_path / "t"),
            *[w for i, n in enumerate(seeds) for w in ("--run", n, f"train.py --lr 0.0{i + 1}")], "--compare", "b-amp",
            "b"]
    args = sweep.parse(argv)
    for i, (name, values) in enumerate(seeds.items()):
        for seed, miou in zip((1, 2), values):
            cmd, run_dir = sweep.command_for(args, name, f"train.py --lr 0.0{i + 1}", seed)
            os.makedirs(run_dir)
            Path(run_dir, "result.json").write_text(json.dumps({"cmd": cmd[1:], "best_mIoU": miou,
                                                                "final_mIoU": miou - 0.01}))
    sweep.main(args)
    assert not (tmp_path / "runs-dir" / "results.md").exists()
    rows = (tmp_path / "t.md").read_text().splitlines()
    assert rows[0].startswith("| run | vs | n |") and rows[1].count("---") == 11
    assert rows[2].startswith("| a |  | 2 |")
    assert rows[3].startswith("| a-amp | a | 2 |") and "| -0.50 ± 2.12 |" in rows[3]  # +1, -2 vs a
    assert rows[4].startswith("| b | a | 2 |") and "| +4.00 ± 2.83 |" in rows[4] and "| 2/2 |" in rows[4]
    assert rows[5].startswith("| b-amp | b | 2 |") and "| -1.50 ± 0.71 |" in rows[5] and "| 0/2 |" in rows[5]
    assert json.loads((tmp_path / "t.json").read_text())["versus"] == {"b-amp": "b"} and (tmp_path / "t.png").exists()
    for bad, message in ((["--compare", "b-amp", "z"], "--compare b-amp z"), (["--compare", "a", "a"], "--compare a a"),
                         (["--table", str(tmp_path)], "give a file prefix")):
        with pytest.raises(sweep.UsageError, match=message):
            sweep.parse(argv + bad)


def test_paper_sh_dry_run_prints_the_papers_grid():
    """scripts/paper.sh pascal: LAD's label-assisted teacher first, then the paper's 7 rows x 3 seeds at its
    schedule with the published teacher, each under torchrun on GPUS GPUs (python with one)."""
    def dry(*args, **env):
        return subprocess.run(["bash", str(ROOT / "scripts" / "paper.sh"), *args], capture_output=True, text=True,
                              env=dict(os.environ, DRY_RUN="1", **env), timeout=120)

    p = dry("pascal", "out", GPUS="4")
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stdout.splitlines() if not line.startswith("# ")]  # the sweep's plan notes
    assert lines[0].startswith("torchrun --standalone --nproc_per_node 4 train.py") and "--label-assisted" in lines[0]
    runs = lines[1:]
    assert len(runs) == 21 and all(line.startswith("torchrun --standalone --nproc_per_node 4 ") for line in runs)
    for flag in ("--dataset pascal", "--use-sbd", "--epochs 120", "--backbone resnet18", "--nesterov",
                 "--batch-size 6", "--crop-size 513"):
        assert all(flag in line for line in runs), flag
    rows = {line.split("--run-dir out/runs/")[1].split("/")[0] for line in runs}
    assert rows == {"baseline", "kd", "overhaul", "dist", "cirkd", "lad", "attnfd"}
    lad = [line for line in runs if "--lad_lambda 3" in line]
    assert len(lad) == 3 and all("--teacher_path out/lad-teacher/pascal/lad-teacher/model_best.pth.tar" in x
                                 for x in lad)
    assert all("--teacher_path pretrained/teacher-pascal.pth.tar" in x for x in runs if "cirkd_lambda 1" in x)
    p = dry("cityscapes", "out", SEEDS="1")
    lines = [line for line in p.stdout.splitlines() if not line.startswith("# ")]
    assert p.returncode == 0 and len(lines) == 8 and "--use-sbd" not in p.stdout
    assert not p.stdout.startswith("torchrun") and "/train.py --dataset cityscapes" in lines[1]
    assert dry("coco").returncode == 2 and dry("pascal", GPUS="two").returncode == 2


@pytest.mark.slow
def test_sigterm_saves_and_records_every_training_and_resume_goes_on_under_the_same_command_only(tmp_path):
    """A scheduler's SIGTERM to the sweep alone: passed on to both trainings, which save; the sweep records them as
    stopped and exits 143 without a traceback.  ``--resume`` refuses a changed command, its dry run shows the
    ``--resume`` it will add, it finishes both cells, and a finished cell whose record was lost is recorded from
    its checkpoint without training."""
    root = generate(tmp_path / "data", n_train=4, n_val=2, size=32, seed=0)
    env = dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root, PYTHONUNBUFFERED="1")
    grid = ["--out", str(tmp_path / "s"), "--seeds", "1", "2", "--jobs", "2", "--run", "a",
            "train.py --backbone resnet18"]
    common = [*COMMON[:-1], "4"]
    p = subprocess.Popen([sys.executable, str(ROOT / "sweep.py"), *grid, "--", *common], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cells = [tmp_path / "s" / "runs" / "a" / f"seed{seed}" for seed in (1, 2)]
    logs = [tmp_path / "s" / "logs" / f"a-seed{seed}.log" for seed in (1, 2)]
    deadline = time.time() + 300
    while not all(log.exists() and "Starting Epoch" in log.read_text() for log in logs) and time.time() < deadline:
        time.sleep(0.05)  # both trainings are in their first epoch
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-2000:]
    result = json.loads((tmp_path / "s" / "results.json").read_text())
    assert set(result["stopped"]["a"]) == {"1", "2"} and all("saved" in v for v in result["stopped"]["a"].values())
    for seed in (1, 2):
        log = (tmp_path / "s" / "logs" / f"a-seed{seed}.log").read_text()
        assert "Stopped by SIGTERM" in log  # each training saved and stopped itself: none runs on unsupervised
    assert not any((c / "result.json").exists() for c in cells)
    assert "STOPPED `a` seed 1" in (tmp_path / "s" / "results.md").read_text()

    before = {c: sorted(str(x) for x in c.rglob("*")) for c in cells}
    changed = cli("sweep.py", *grid, "--resume", "--", *COMMON[:-1], "5", env=env, cwd=tmp_path)
    assert changed.returncode == 2 and "started with another command" in changed.stderr
    assert {c: sorted(str(x) for x in c.rglob("*")) for c in cells} == before
    dry = cli("sweep.py", *grid, "--resume", "--dry-run", "--", *common, env=env, cwd=tmp_path)
    launched = [line for line in dry.stdout.splitlines() if not line.startswith("#")]
    assert len(launched) == 2 and all("--resume" in line and "checkpoint.pth.tar" in line for line in launched)

    p = cli("sweep.py", *grid, "--resume", "--", *common, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    for seed, cell in zip((1, 2), cells):
        log = (tmp_path / "s" / "logs" / f"a-seed{seed}.log").read_text()
        assert "Resumed" in log and json.loads((cell / "result.json").read_text())["cmd"][-1] == str(cell)
        assert len(list(cell.rglob("experiment_*"))) == 1  # the same experiment went on
    best = json.loads((cells[0] / "result.json").read_text())["best_mIoU"]

    (cells[0] / "result.json").unlink()  # the sweep was killed between the training's end and its record
    p = cli("sweep.py", *grid, "--resume", "--", *common, env=env, cwd=tmp_path)
    assert p.returncode == 0 and "a seed 1: mIoU" in p.stdout and "recorded from its checkpoint" in p.stdout
    assert json.loads((cells[0] / "result.json").read_text())["best_mIoU"] == best
    assert (tmp_path / "s" / "logs" / "a-seed1.log").read_text().count("Resumed") == 1  # nothing trained again


def test_match_budget_gives_each_row_the_iterations_of_the_reference_rows_mean_cost():
    args = sweep.parse(["--out", "o", "--seeds", "1", "2", "--match-budget", "base", "--run", "base", "train.py",
                        "--run", "kd", "train.py --lr 0.1", "--run", "cheap", "train.py --lr 0.2"])
    records = {("base", 1): {"flops": 100.0, "iterations": 10, "train_seconds": 9.0},
               ("base", 2): {"flops": 140.0, "iterations": 10, "train_seconds": 11.0},  # target: 120 FLOPs, 10 s
               ("kd", 1): {"flops": 300.0, "iterations": 10, "train_seconds": 40.0},   # 30 FLOPs an iteration
               ("kd", 2): {"error": "exit 1"},                                          # failed: not measured
               ("cheap", 1): {"flops": 50.0, "iterations": 10, "train_seconds": 2.0},
               ("cheap", 2): {"flops": 70.0, "iterations": 10, "train_seconds": 3.0}}  # 6 FLOPs, 0.25 s
    assert sweep.budgets(args, records) == {"kd": 4, "cheap": 20}  # 120 / 30, 120 / 6
    args.budget_by = "time"
    assert sweep.budgets(args, records) == {"kd": 2, "cheap": 40}  # 10 / 4 = 2.5 -> 2 (to even), 10 / 0.25
    assert sweep.budgets(args, {k: v for k, v in records.items() if k[0] != "base"}) == {}  # nothing to match
    cells = sweep.budget_cells(args, records)
    assert [n for n, _ in args.run] == ["base", "kd", "kd.time", "cheap", "cheap.time"]
    assert [(c.name, c.seed, c.cmd[-5:-4]) for c in cells][:2] == [("kd.time", 1, ["2"]), ("cheap.time", 1, ["40"])]
    assert sweep.budget_cells(args, records) and [n for n, _ in args.run][-1] == "cheap.time"  # again: same rows


def test_an_iteration_budget_cuts_the_last_epoch_and_runs_the_schedule_over_it():
    from utils.lr_scheduler import LRSchedule

    whole, budget = LRSchedule("poly", 3, 4), LRSchedule("poly", 3, 4, iterations=10)
    assert [budget.epoch_length(e) for e in range(3)] == [4, 4, 2]
    assert [whole.epoch_length(e) for e in range(3)] == [4, 4, 4]
    assert budget.factor(2, 1) == pytest.approx((1 - 9 / 10) ** 0.9)  # the last iteration of the 10
    assert whole.factor(2, 1) == pytest.approx((1 - 9 / 12) ** 0.9)
