"""Exact resume: a training subprocess killed with SIGKILL at random points and resumed each time ends
with the weights of an uninterrupted run, bit for bit (CPU, one thread), CIRKD's class queues included; no
checkpoint is ever unreadable."""
import glob
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import save_random_checkpoint

from dataloaders.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def command(run_dir, teacher, *extra):
    return [sys.executable, str(ROOT / "train_kd.py"), "--dataset", "synthetic", "--backbone", "mobilenet",
            "--base-size", "40", "--crop-size", "32", "--batch-size", "2", "--epochs", "3", "--lr", "0.05",
            "--workers", "1", "--no-pretrained", "--no-cuda", "--teacher_path", str(teacher), "--save-every", "1",
            "--log-interval", "3", "--run-dir", str(run_dir), "--checkname", "kd", "--cirkd_lambda", "1",
            "--cirkd_pixel_memory", "48", "--cirkd_region_memory", "8", *extra]  # AttnFD + CIRKD


def checkpoints(run_dir):
    return sorted(glob.glob(str(run_dir / "synthetic" / "kd" / "experiment_*" / "checkpoint.pth.tar")),
                  key=os.path.getmtime)


def progress(path):
    """Iterations done (4 per epoch) by the checkpoint at ``path``."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return ck["epoch"] * 4 + ck["iteration"]


def final_state(run_dir):
    ckpt = torch.load(checkpoints(run_dir)[-1], map_location="cpu", weights_only=True)
    return ckpt


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    root = generate(tmp / "data", n_train=8, n_val=2, size=40, seed=0)
    teacher = save_random_checkpoint(tmp / "teacher.pth.tar")
    env = dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return tmp, teacher, env


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights(setup):
    tmp, teacher, env = setup
    subprocess.run(command(tmp / "straight", teacher), env=env, capture_output=True, check=True, timeout=600)
    reference = final_state(tmp / "straight")
    assert reference["epoch"] == 3 and reference["iteration"] == 0

    rng = random.Random(0)
    run_dir, kills, seen = tmp / "killed", 0, set()
    while True:
        found = checkpoints(run_dir)
        extra = ["--resume", found[-1]] if found else []
        begin = progress(found[-1]) if found else -1
        p = subprocess.Popen(command(run_dir, teacher, *extra), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        if kills == 3:  # enough: let it finish
            assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
            break
        # kill at a random moment of the iteration after the run has gone 1-2 iterations further: the moment is a
        # share of the iteration's measured time, so a fast or a loaded machine kills at the same points
        target, mtime, changed, iteration = begin + rng.randint(1, 2), None, None, 0.05
        while p.poll() is None:
            found = checkpoints(run_dir)
            if found and os.path.getmtime(found[-1]) != mtime:
                mtime, now = os.path.getmtime(found[-1]), time.time()
                iteration, changed = (now - changed if changed else iteration), now
                if progress(found[-1]) >= target:
                    time.sleep(rng.uniform(0, 1) * iteration)
                    p.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.005)
        p.wait()
        assert p.returncode in (0, -signal.SIGKILL), p.stderr.read()[-2000:]
        kills += p.returncode == -signal.SIGKILL
        for path in checkpoints(run_dir):  # every checkpoint on disk is complete and readable
            seen.add(progress(path))
        if p.returncode == 0:
            break
    assert kills == 3 and len(seen) >= 3  # killed at several points of the run
    resumed = final_state(run_dir)
    assert resumed["epoch"] == 3
    queues = reference["connectors"].pop("cirkd._extra_state")
    assert queues["pixel_ptr"].sum() > 0  # the queues were written to
    for k, v in queues.items():
        assert torch.equal(resumed["connectors"]["cirkd._extra_state"][k], v), f"CIRKD's {k} differs"
    for part in ("state_dict", "connectors"):
        for k, v in reference[part].items():
            assert torch.equal(resumed[part][k], v), f"{part} {k} differs from the uninterrupted run"
    for k, v in reference["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"])


def test_sigterm_finishes_the_step_saves_and_says_how_to_resume(setup):
    tmp, teacher, env = setup
    run_dir = tmp / "term"
    p = subprocess.Popen(command(run_dir, teacher, "--save-every", "0", "--epochs", "30"), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(3000):  # wait until training runs (the first epoch's checkpoint exists; slow machines too)
        if checkpoints(run_dir):
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Stopped by SIGTERM" in out and "--resume" in out and "Traceback" not in err
    ck = torch.load(checkpoints(run_dir)[-1], map_location="cpu", weights_only=True)
    assert (ck["epoch"], ck["iteration"]) != (30, 0)
    resumed = subprocess.run(command(run_dir, teacher, "--epochs", str(ck["epoch"] + 1),
                                     "--resume", checkpoints(run_dir)[-1]),
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "Resumed" in resumed.stdout


def start_ranks(argv, env, port):
    """The 2 processes torchrun would start (its environment variables), each with its own exit status."""
    return [subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=str(port)))
            for r in range(2)]


def finish(ranks):
    outs = [p.communicate(timeout=600) for p in ranks]
    return [p.returncode for p in ranks], outs


def test_sigterm_to_one_of_two_ranks_saves_stops_both_and_resumes_exactly(setup):
    """SIGTERM reaches one rank only (a scheduler, a user): the ranks agree at the next logging point, rank 0
    saves, both exit with 143, and --resume on 2 processes ends with the uninterrupted run's weights."""
    import socket

    tmp, _, env = setup
    root = generate(tmp / "ddp-data", n_train=16, n_val=2, size=40, seed=0)
    env = dict(env, ATTNFD_SYNTHETIC_ROOT=root)

    def argv(run_dir, *extra):
        return ["--dataset", "synthetic", "--backbone", "mobilenet", "--base-size", "40", "--crop-size", "32",
                "--batch-size", "4", "--epochs", "3", "--lr", "0.05", "--workers", "0", "--no-pretrained", "--no-cuda",
                "--log-interval", "1", "--run-dir", str(run_dir), "--checkname", "ddp", *extra]

    def port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def last(run_dir):
        return glob.glob(str(run_dir / "synthetic" / "ddp" / "experiment_*" / "checkpoint.pth.tar"))

    codes, outs = finish(start_ranks(argv(tmp / "ddp-straight"), env, port()))
    assert codes == [0, 0], outs[0][1][-2000:]
    reference = torch.load(last(tmp / "ddp-straight")[0], weights_only=True)
    assert len(reference["rng_per_rank"]) == 2  # each rank's own dropout stream is kept

    ranks = start_ranks(argv(tmp / "ddp-stop"), env, port())
    for _ in range(6000):  # until the first epoch's checkpoint exists: training is under way (slow machines too)
        if last(tmp / "ddp-stop"):
            break
        time.sleep(0.05)
    ranks[1].send_signal(signal.SIGTERM)
    codes, outs = finish(ranks)
    assert codes == [128 + signal.SIGTERM] * 2, [err[-1500:] for _, err in outs]
    assert "Stopped by SIGTERM" in outs[0][0] and not any("Traceback" in err for _, err in outs)
    stopped = torch.load(last(tmp / "ddp-stop")[0], weights_only=True)
    assert (stopped["epoch"], stopped["iteration"]) != (3, 0)
    codes, outs = finish(start_ranks(argv(tmp / "ddp-stop", "--resume", last(tmp / "ddp-stop")[0]), env, port()))
    assert codes == [0, 0], outs[0][1][-2000:]
    resumed = torch.load(last(tmp / "ddp-stop")[0], weights_only=True)
    for k, v in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][k], v), k
    assert [h["val"]["mIoU"] for h in resumed["history"]] == [h["val"]["mIoU"] for h in reference["history"]]
