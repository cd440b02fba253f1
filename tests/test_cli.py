"""End to end: the real CLIs as subprocesses on a tiny generated dataset."""
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_random_checkpoint
from tensorboardX.proto import event_pb2

from dataloaders.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
COMMON = ["--dataset", "synthetic", "--base-size", "48", "--crop-size", "48", "--batch-size", "4",
          "--workers", "1", "--no-pretrained", "--no-cuda"]


def run(script, *args, env, cwd, check=True):
    p = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def tags(directory):
    """Scalar/image tags in the tensorboard event files of ``directory`` (TFRecord framing)."""
    found = set()
    for name in os.listdir(directory):
        if not name.startswith("events.out.tfevents"):
            continue
        data = (Path(directory) / name).read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + length])
            found.update(v.tag for v in event.summary.value)
            pos += 12 + length + 4
    return found


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = generate(tmp / "data", n_train=8, n_val=2, size=48, seed=0)
    env = dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    return tmp, env


def test_teacher_baseline_distillation_resume_and_eval(work):
    tmp, env = work
    runs = tmp / "run" / "synthetic"

    # teacher with CBAM in the forward path
    run("train.py", "--backbone", "resnet18", "--epochs", "1", "--attention-in-path", "--checkname", "teacher",
        *COMMON, env=env, cwd=tmp)
    teacher = load(runs / "teacher" / "model_best.pth.tar")
    assert teacher["epoch"] == 1 and teacher["args"]["attention_in_path"] is True
    assert {"state_dict", "optimizer", "best_pred", "args"} <= set(teacher)

    # baseline, then resume it for a second epoch in the same experiment
    run("train.py", "--backbone", "resnet18", "--epochs", "1", *COMMON, env=env, cwd=tmp)
    exp = runs / "deeplab-resnet18" / "experiment_0"
    assert (exp / "parameters.txt").read_text().count("backbone:resnet18") == 1
    assert {"train/total_loss_iter", "train/ce", "train/lr", "val/mIoU", "val/fwIoU",
            "Image_GT_Prediction"} <= tags(exp)
    assert (exp / "vis" / "epoch_000.png").stat().st_size > 0
    p = run("train.py", "--backbone", "resnet18", "--epochs", "2", "--resume", str(exp / "checkpoint.pth.tar"),
            *COMMON, env=env, cwd=tmp)
    assert "Resumed" in p.stdout
    ck = load(exp / "checkpoint.pth.tar")
    assert ck["epoch"] == 2 and len(ck["history"]) == 2 and ck["optimizer"]["state"]
    assert not (runs / "deeplab-resnet18" / "experiment_1").exists()
    baseline = ck["state_dict"]
    # eval.py reports for that checkpoint exactly what the trainer logged for its last epoch
    run("eval.py", "--checkpoint", str(exp / "checkpoint.pth.tar"), "--dataset", "synthetic", "--crop-size", "48",
        "--json", str(tmp / "baseline.json"), "--workers", "0", "--no-cuda", env=env, cwd=tmp)
    logged, evaluated = ck["history"][-1]["val"], json.loads((tmp / "baseline.json").read_text())
    assert evaluated["mIoU"] == logged["mIoU"] and list(evaluated["IoU"].values()) == logged["IoU"]
    assert evaluated["Acc"] == logged["Acc"] and evaluated["fwIoU"] == logged["fwIoU"]

    # distillation: warm-up epoch only, starting from the baseline's weights (--ft)
    teacher_path = str(runs / "teacher" / "model_best.pth.tar")
    kd = ["--backbone", "resnet18", "--teacher_path", teacher_path, *COMMON]
    p = run("train_kd.py", "--epochs", "1", "--resume", str(exp / "checkpoint.pth.tar"), "--ft", "--checkname",
            "kd", *kd, env=env, cwd=tmp)
    assert "teacher attention: checkpoint (the teacher was trained with CBAM in its forward path)" in p.stdout
    kd_exp = runs / "kd" / "experiment_0"
    warm = load(kd_exp / "checkpoint.pth.tar")
    for k, v in warm["state_dict"].items():
        if "running_" not in k and "num_batches" not in k:
            assert torch.equal(v, baseline[k]), f"student weight {k} changed during the warm-up epoch"
    connectors = warm["connectors"]
    assert any(not torch.all(v == 1) for k, v in connectors.items() if k.endswith("1.weight"))  # BN moved
    # resume: epochs 1..2 train the student, the connectors stay fixed
    run("train_kd.py", "--epochs", "3", "--resume", str(kd_exp / "checkpoint.pth.tar"), "--checkname", "kd", *kd,
        env=env, cwd=tmp)
    final = load(kd_exp / "checkpoint.pth.tar")
    assert final["epoch"] == 3
    for k, v in final["connectors"].items():
        if "running_" not in k and "num_batches" not in k:
            assert torch.equal(v, connectors[k]), f"connector {k} changed after the warm-up"
    changed = [k for k, v in final["state_dict"].items() if "running_" not in k and not torch.equal(v, baseline[k])]
    assert any("cbam.ChannelGate.mlp" in k for k in changed)  # student CBAM Linear layers are optimised
    assert {"train/attnfd/backbone", "train/attnfd/aspp", "train/attnfd/decoder", "train/distill/total"} <= tags(
        kd_exp)

    # eval with visualisations and JSON
    out = tmp / "eval.json"
    run("eval.py", "--checkpoint", str(runs / "kd" / "model_best.pth.tar"), "--dataset", "synthetic",
        "--crop-size", "48", "--flip", "--scales", "0.75", "1", "--json", str(out), "--save-vis", str(tmp / "vis"),
        "--no-cuda", env=env, cwd=tmp)
    result = json.loads(out.read_text())
    assert 0 <= result["mIoU"] <= 1 and len(result["IoU"]) == 7 and result["images"] == 2
    assert len(list((tmp / "vis").glob("*_overlay.png"))) == 2


def test_all_ten_methods_at_once_with_a_mobilenet_student(work, tmp_path):
    """AttnFD + KD + AT + Overhaul + CWD + DIST + SKD + CIRKD + LAD + Af-DCD in one run (a label-assisted teacher,
    as LAD needs): epoch 0 warms up the AttnFD and Overhaul connectors alone; after it (here a resumed run) the
    student and the connectors of Overhaul, CIRKD and Af-DCD learn, AttnFD's stay; CIRKD's queues fill."""
    _, env = work
    teacher = save_random_checkpoint(tmp_path / "teacher.pth.tar", label_assisted=True)
    kd = ["--backbone", "mobilenet", "--teacher_path", str(teacher), "--checkname", "all", *COMMON,
          "--attn_lambda", "2", "--kd_lambda", "1", "--at_lambda", "1000", "--overhaul_lambda", "1e-5",
          "--cwd_lambda", "3", "--dist_lambda", "1", "--skd_lambda", "1", "--cirkd_lambda", "1",
          "--cirkd_pixel_memory", "64", "--cirkd_region_memory", "16", "--lad_lambda", "3", "--afdcd_lambda", "1"]
    p = run("train_kd.py", "--epochs", "1", *kd, env=env, cwd=tmp_path)
    for method in ("AttnFD", "KD", "AT", "Overhaul", "CWD", "DIST", "SKD (without the holistic term)", "CIRKD", "LAD",
                   "Af-DCD"):
        assert f"Distillation: {method}:" in p.stdout
    assert "teacher mode: train" in p.stdout and "label-assisted: its 4th input channel" in p.stdout
    exp = tmp_path / "run" / "synthetic" / "all" / "experiment_0"
    warm = load(exp / "checkpoint.pth.tar")
    assert {k.split(".")[0] for k in warm["connectors"]} == {"attnfd", "overhaul", "cirkd", "afdcd"}
    run("train_kd.py", "--epochs", "2", "--resume", str(exp / "checkpoint.pth.tar"), *kd, env=env, cwd=tmp_path)
    final = load(exp / "checkpoint.pth.tar")
    assert final["epoch"] == 2 and len(final["history"]) == 2
    weights = [k for k in final["connectors"] if k.endswith("0.weight")]
    moved = {k.split(".")[0] for k in weights if not torch.equal(final["connectors"][k], warm["connectors"][k])}
    assert moved == {"overhaul", "cirkd", "afdcd"}
    queues = final["connectors"]["cirkd._extra_state"]
    assert queues["pixel"].shape == (7, 64, 256) and queues["pixel_ptr"].sum() > 0
    assert not torch.equal(queues["region"], warm["connectors"]["cirkd._extra_state"]["region"])
    assert any(not torch.equal(v, warm["state_dict"][k]) for k, v in final["state_dict"].items())
    logged = ("attnfd/backbone", "kd", "at", "overhaul", "cwd", "dist", "skd/pixelwise", "cirkd/minibatch",
              "cirkd/memory_region", "lad", "afdcd/contrast", "distill/total")
    assert {f"train/{t}" for t in logged} <= tags(exp)
    train = final["history"][-1]["train"]
    recorded = {"kd", "at", "overhaul", "cwd", "dist", "skd/pairwise", "cirkd/kd", "cirkd/memory_pixel", "lad",
                "afdcd/mimic"}
    assert recorded <= set(train) and all(math.isfinite(v) for v in train.values() if isinstance(v, float))


def test_xception_lineage_teacher_gets_parameter_free_attention(work, tmp_path):
    _, env = work
    from modeling import DeepLab

    sd = {k: v for k, v in DeepLab(num_classes=7, backbone="resnet18").state_dict().items() if ".cbam." not in k}
    torch.save({"state_dict": sd, "epoch": 50}, tmp_path / "deeplab-resnet.pth.tar")
    kd = ["--teacher_path", str(tmp_path / "deeplab-resnet.pth.tar"), "--teacher-backbone", "resnet18", "--epochs", "1",
          *COMMON]
    p = run("train_kd.py", *kd, env=env, cwd=tmp_path)
    assert "teacher attention: parameter-free (the checkpoint has no CBAM weights" in p.stdout
    p = run("train_kd.py", *kd, "--teacher-attention", "checkpoint", env=env, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "has no CBAM weights" in p.stderr and "--teacher-attention parameter-free" in p.stderr


def test_demo_runs_end_to_end_on_a_tiny_budget(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    p = run("demo.py", "--out", str(tmp_path / "demo"), "--n-train", "8", "--n-val", "2", "--size", "48",
            "--teacher-epochs", "1", "--student-epochs", "2", "--teacher-eval-interval", "1", "--workers", "0",
            "--no-cuda", env=env, cwd=tmp_path)
    assert "teacher (ResNet-101)" in p.stdout and "AttnFD (ResNet-18)" in p.stdout
    results = json.loads((tmp_path / "demo" / "demo_results.json").read_text())["results"]
    assert set(results) == {"teacher (ResNet-101)", "baseline (ResNet-18)", "AttnFD (ResNet-18)"}
    assert round(results["baseline (ResNet-18)"]["params_M"], 2) == 16.6
    assert len(results["AttnFD (ResNet-18)"]["curve"]) == 2
    args = load(Path(results["baseline (ResNet-18)"]["run"]) / "checkpoint.pth.tar")["args"]
    assert args["fused_sgd"] and args["epochs"] == 2  # --fast (the default): the fused SGD update
    for name in ("demo_curves.png", "demo_predictions.png"):
        assert (tmp_path / "demo" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def torchrun(script, *args, env, cwd, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(ROOT / script), *args]
    p = subprocess.run(cmd, cwd=cwd, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"torchrun {script} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def test_torchrun_two_processes_train_distill_and_resume(work, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo): one experiment directory per run, written by rank 0 alone,
    the global batch split in two, and --resume continuing the same experiment."""
    _, env = work
    runs = tmp_path / "run" / "synthetic"
    common = [*COMMON, "--run-dir", str(tmp_path / "run"), "--sync-bn"]
    p = torchrun("train.py", "--backbone", "resnet18", "--epochs", "1", "--checkname", "t", "--label-assisted",
                 *common, env=env, cwd=tmp_path)  # LAD's teacher: two noised label paths
    assert {"ce", "lad/ce_path2", "lad/consistency"} <= set(
        load(runs / "t" / "experiment_0" / "checkpoint.pth.tar")["history"][0]["train"])
    assert "2 processes (DDP, gloo), global batch 4 = 2 x 2" in p.stdout
    assert p.stdout.count("Validation: [Epoch: 0, numImages:     2]") == 1  # rank 0 reports, both images counted
    teacher = runs / "t" / "experiment_0" / "checkpoint.pth.tar"
    kd = ["--backbone", "resnet18", "--teacher_path", str(teacher), "--checkname", "kd", *common,
          "--kd_lambda", "1", "--overhaul_lambda", "1e-5", "--dist_lambda", "1", "--cirkd_lambda", "1",
          "--cirkd_pixel_memory", "64", "--cirkd_region_memory", "16", "--lad_lambda", "3",
          "--afdcd_lambda", "1"]  # + AttnFD: 4 connector sets
    torchrun("train_kd.py", "--epochs", "2", *kd, env=env, cwd=tmp_path)  # warm-up epoch, then one under DDP
    exp = runs / "kd" / "experiment_0"
    first = load(exp / "checkpoint.pth.tar")
    assert first["epoch"] == 2 and not any(k.startswith("module.") for k in first["state_dict"])
    torchrun("train_kd.py", "--epochs", "3", "--resume", str(exp / "checkpoint.pth.tar"), *kd, env=env, cwd=tmp_path)
    final = load(exp / "checkpoint.pth.tar")
    assert final["epoch"] == 3 and len(final["history"]) == 3
    assert {"kd", "overhaul", "dist", "attnfd/decoder", "cirkd/memory_pixel", "lad", "afdcd/contrast"} <= set(
        final["history"][-1]["train"])
    assert len(final["optimizer"]["param_groups"]) == 5  # backbone, head, Overhaul's, CIRKD's, Af-DCD's modules
    assert sorted(p.name for p in (runs / "kd").iterdir()) == ["experiment_0", "model_best.pth.tar"]
    assert sorted(p.name for p in (runs / "t").iterdir()) == ["experiment_0", "model_best.pth.tar"]
    assert len(list(exp.glob("events.out.tfevents*"))) == 2  # one per run (rank 0), not one per rank
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else written anywhere

    # an error on the ranks: the one-line message, a non-zero exit, no run directory
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train_kd.py"), *kd[:2], "--teacher_path", "missing.pth", *common, "--checkname", "bad"]
    p = subprocess.run(cmd, cwd=tmp_path, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "error: --teacher_path: no checkpoint at missing.pth" in p.stdout + p.stderr
    assert not (runs / "bad").exists()


def limit_file_size():
    """A disk that fills up: writes past 2 MB fail (EFBIG) instead of killing the process."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, 2 * 2**20))


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(work, tmp_path):
    """The disk fills up while saving: one line, and the checkpoint that was there before is intact.  (The
    other bad inputs: tests/test_bad_input.py.)"""
    from modeling import DeepLab

    _, env = work
    torch.manual_seed(0)
    torch.save({"state_dict": DeepLab(num_classes=7, backbone="mobilenet").state_dict(),
                "args": {"backbone": "mobilenet", "dataset": "synthetic"}}, tmp_path / "mobilenet.pth")
    data = (tmp_path / "mobilenet.pth").read_bytes()
    # the disk fills up while saving: one line, and the checkpoint that was there before is intact
    run_dir = tmp_path / "full"
    exp = run_dir / "synthetic" / "deeplab-mobilenet" / "experiment_0"
    exp.mkdir(parents=True)
    (exp / "checkpoint.pth.tar").write_bytes(data)
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "--backbone", "mobilenet", *COMMON, "--epochs", "1",
                        "--run-dir", str(run_dir), "--resume", str(tmp_path / "mobilenet.pth"), "--ft"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]  # beside tqdm's progress bars
    assert p.returncode == 2 and len(errors) == 1 and "cannot write checkpoint" in errors[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr and p.stderr.strip().splitlines()[-1] == errors[0]
    assert (exp / "checkpoint.pth.tar").read_bytes() == data
