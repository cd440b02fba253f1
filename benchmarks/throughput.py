"""Whole-CLI training throughput: images/s of train.py and train_kd.py on generated data, as a user runs them.

Generates a synthetic dataset at ``--size`` px (513 by default, Pascal's crop) in the VOC format, its train list
repeating the ``--images`` images so that one epoch has ``STEADY_AFTER + --iters`` iterations, writes a randomly
initialised teacher checkpoint (ResNet-101), runs one epoch of each CLI per precision setting (``--no-val``;
train_kd.py with ``--no-warmup``, so the epoch is a distillation epoch, not the warm-up), and reads from each run's
history.json the steady-state images/s (the ``--iters`` iterations after the first ``STEADY_AFTER``: start-up left
out), the whole epoch's, and the share of time spent waiting for data, so a data-loading bottleneck shows.
Nothing here measures accuracy.

python benchmarks/throughput.py                                  # CUDA if available; fp32 and --amp --channels-last
python benchmarks/throughput.py --images 24 --batch-size 4 --no-cuda --json throughput.json
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dataloaders.synthetic import generate  # noqa: E402
from modeling import DeepLab  # noqa: E402
from modeling.backbone import BACKBONES  # noqa: E402
from training.loop import STEADY_AFTER  # noqa: E402
from utils.cli import ArgumentParser, UsageError, cli_main, number  # noqa: E402
from utils.device import default_workers  # noqa: E402
from utils.outputs import Outputs  # noqa: E402
from utils.saver import save_atomic  # noqa: E402

SETTINGS = {"fp32": [], "amp+channels_last": ["--amp", "--channels-last"]}
TORCHRUN_1 = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
LAUNCHERS = {"plain": ([], []), "torchrun": (TORCHRUN_1, []), "torchrun-sync-bn": (TORCHRUN_1, ["--sync-bn"])}


COUNT, POSITIVE = number(int, 0), number(int, 1)

def get_args_parser():
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=POSITIVE, default=513, help="image side and crop")
    p.add_argument("--images", type=POSITIVE, default=None, help="train images (default 96 on CUDA, 24 on CPU)")
    p.add_argument("--batch-size", type=number(int, 2), default=6, help="at least 2, at most --images")
    p.add_argument("--iters", type=POSITIVE, default=None,
                   help="steady-state iterations measured (default 200 on CUDA, 10 on CPU), after the first "
                        f"{STEADY_AFTER}")
    p.add_argument("--student", default="resnet18", choices=sorted(BACKBONES))
    p.add_argument("--teacher", default="resnet101", choices=sorted(BACKBONES), help="train_kd.py's (random weights)")
    p.add_argument("--workers", type=COUNT, default=default_workers())
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--scripts", nargs="+", default=["train.py", "train_kd.py"], choices=["train.py", "train_kd.py"])
    p.add_argument("--launchers", nargs="+", default=["plain"], choices=list(LAUNCHERS),
                   help="plain python, or torchrun with one process (the process group's cost), with --sync-bn")
    p.add_argument("--no-cuda", action="store_true")
    p.add_output("--work", kind="run", default=None,
                 help="folder for data and runs (default: a temporary one); what is there is reused, never replaced")
    p.add_output("--json", default=None)
    p.add_overwrite()
    return p


def run(a):
    outputs = Outputs.from_args(get_args_parser(), a, "benchmarks/throughput.py")
    if a.work:
        outputs.writes_run("--work", a.work)
    outputs.check()
    cuda = torch.cuda.is_available() and not a.no_cuda
    n = a.images or (96 if cuda else 24)
    if a.batch_size > n:
        raise UsageError(f"--batch-size {a.batch_size} is more than the {n} --images of the epoch; give more --images "
                         f"or a smaller --batch-size")
    work = a.work or tempfile.mkdtemp(prefix="attnfd-throughput-")
    data = os.path.join(work, "data")
    if not os.path.isdir(os.path.join(data, "VOC2012")):
        print(f"Generating {n} + 4 images of {a.size} px in {data} ...")
        generate(data, n, 4, a.size, seed=0)
    iters = a.iters or (200 if cuda else 10)
    listed = os.path.join(data, "VOC2012", "ImageSets", "Segmentation", "train.txt")
    with open(listed) as f:
        ids = sorted({line.strip() for line in f if line.strip()})
    repeats = -(-(STEADY_AFTER + iters) * a.batch_size // len(ids))
    with open(listed, "w") as f:  # the generated list, its images repeated: one long epoch
        f.write("".join(f"{i}\n" for _ in range(repeats) for i in ids))
    teacher = os.path.join(work, f"teacher-{a.teacher}.pth.tar")
    if not os.path.isfile(teacher):
        model = DeepLab(num_classes=7, backbone=a.teacher)  # synthetic data: 7 classes
        save_atomic({"state_dict": model.state_dict(), "args": {"backbone": a.teacher}}, teacher)
    env = {**os.environ, "ATTNFD_SYNTHETIC_ROOT": os.path.join(data, "VOC2012")}
    common = ["--dataset", "synthetic", "--base-size", str(a.size), "--crop-size", str(a.size), "--epochs", "1",
              "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--no-val", "--no-pretrained",
              "--backbone", a.student, "--run-dir", os.path.join(work, "run")] + (["--no-cuda"] if a.no_cuda else [])
    rows = []
    extras = {"train.py": [], "train_kd.py": ["--teacher_path", teacher, "--no-warmup"]}
    cells = [(s, script, launcher) for s in a.settings for script in a.scripts for launcher in a.launchers]
    for setting, script, launcher in cells:
        name, (launch, flags) = f"{script[:-3]}-{setting}-{launcher}", LAUNCHERS[launcher]
        cmd = [sys.executable, *launch, os.path.join(ROOT, script), *common, *extras[script], *SETTINGS[setting],
               *flags, "--checkname", name]
        print("$", " ".join(cmd[1:]), flush=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"error: {script} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
        runs = sorted(glob.glob(os.path.join(work, "run", "synthetic", name, "experiment_*", "history.json")),
                      key=os.path.getmtime)
        with open(runs[-1]) as f:
            train = json.load(f)[-1]["train"]
        rows.append({"script": script, "setting": setting, "launcher": launcher,
                     "steady_images_per_s": train.get("steady_images_per_s", float("nan")),
                     "images_per_s": train["images_per_s"], "data_wait": train["data_wait"],
                     "iterations": train["iterations"]})
    device = torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()}"
    print(f"\n{device}, {a.size} px, batch {a.batch_size}, {n} images repeated to {repeats * len(ids)}, "
          f"{a.workers} workers; steady state: {iters} iterations after the first {STEADY_AFTER}\n")
    print("| script | precision | launcher | steady images/s | epoch images/s | waiting for data |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['script']} | {r['setting']} | {r['launcher']} | {r['steady_images_per_s']:.2f} | "
              f"{r['images_per_s']:.2f} | {100 * r['data_wait']:.0f}% |")
    if a.json:
        outputs.write_json(a.json, {"device": device, "size": a.size, "batch_size": a.batch_size, "images": n,
                                    "epoch_images": repeats * len(ids), "steady_after": STEADY_AFTER,
                                    "workers": a.workers, "rows": rows})
    return rows


main = cli_main(run)  # one-line errors, exit status 2


if __name__ == "__main__":
    main(get_args_parser().parse_args())
