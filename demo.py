"""The whole story on built-in synthetic data, on a CPU, in one command:

    python demo.py

generates the synthetic dataset (Pascal VOC format), trains a ResNet-101 teacher (20 epochs, batch 8), a ResNet-18
baseline and a ResNet-18 AttnFD student (8 epochs, batch 4, both), then prints a table
(mIoU, parameters, time) and writes demo_out/demo_curves.png, demo_out/demo_predictions.png and
demo_out/demo_results.json.  Runs land in demo_out/run/synthetic/<checkname>/experiment_<k>.
"""
import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dataloaders import build_dataset, class_names  # noqa: E402
from dataloaders.synthetic import generate  # noqa: E402
from dataloaders.utils import decode_segmap, denormalize, get_palette  # noqa: E402
from modeling import num_params  # noqa: E402
from training import get_args_parser, main, resolve_args  # noqa: E402
from utils.cli import ArgumentParser, UsageError, number, one_line_errors  # noqa: E402
from utils.device import Precision, cpu_has_native_bf16  # noqa: E402
from utils.outputs import Outputs  # noqa: E402

COUNT, POSITIVE, RATE = number(int, 0), number(int, 1), number(float, 0, low_open=True)


def get_demo_parser():
    p = ArgumentParser(description="AttnFD demo on synthetic data")
    p.add_output("--out", kind="folder", default="demo_out",
                 help="folder for the data, the runs, demo_results.json and the PNGs")
    p.add_argument("--seed", type=COUNT, default=1, help="training seed (the dataset is fixed by --data-seed)")
    p.add_argument("--data-seed", type=COUNT, default=0)
    p.add_argument("--n-train", type=POSITIVE, default=160)
    p.add_argument("--n-val", type=POSITIVE, default=40)
    p.add_argument("--size", type=POSITIVE, default=64, help="image side; also the crop size")
    p.add_argument("--teacher-epochs", type=POSITIVE, default=20)
    p.add_argument("--teacher-batch-size", type=POSITIVE, default=8,
                   help="a larger batch than the students': the ResNet-101 runs twice as many images per second")
    p.add_argument("--teacher-lr", type=RATE, default=0.1)
    p.add_argument("--student-epochs", type=POSITIVE, default=8,
                   help="the study (docs/results.md) trains its students 10 epochs; 8 keep the demo under 8 minutes")
    p.add_argument("--batch-size", type=POSITIVE, default=4, help="students' batch size (the study's)")
    p.add_argument("--lr", type=RATE, default=0.05, help="students' learning rate")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (train.py --amp); default: on with CUDA and on CPUs with native bf16")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="the fused SGD update (train.py --fused-sgd) and, with --amp, NHWC (--channels-last): "
                        "a ResNet-101 SGD update 0.04 s instead of 0.19 s on 2 CPU cores; not bit-identical with "
                        "train.py's defaults")
    p.add_argument("--attn_lambda", type=number(float, 0), default=2.0)
    p.add_argument("--teacher-eval-interval", type=POSITIVE, default=5)
    p.add_argument("--workers", type=COUNT, default=2)
    p.add_argument("--no-cuda", action="store_true")
    p.add_overwrite()
    return p


OUTPUTS = ("demo_results.json", "demo_curves.png", "demo_predictions.png")


def train(script_args, kd=False):
    args = get_args_parser(kd).parse_args(script_args)
    start = time.time()
    run = main(args, kd=kd)
    return run, time.time() - start


def check_commands(commands, d, cuda):
    """UsageError (one line) for a value any of the demo's three trainings would refuse, and for a train split
    smaller than a batch."""
    for name, argv in commands.items():
        kd = name.startswith("AttnFD")
        resolve_args(get_args_parser(kd).parse_args(argv), kd, cuda=cuda)
    batch = max(d.teacher_batch_size, d.batch_size)
    if d.n_train < batch:
        raise UsageError(f"--n-train {d.n_train}: a batch of {batch} needs at least {batch} train images")


def main_demo(d):
    started = time.time()
    outputs = Outputs.from_args(get_demo_parser(), d, "demo.py").writes_folder("--out", d.out, OUTPUTS).check()
    cuda = torch.cuda.is_available() and not d.no_cuda
    if d.amp is None:
        d.amp = cuda or cpu_has_native_bf16()
    device = torch.device("cuda" if cuda else "cpu")
    print(f"Demo precision: {Precision(device, d.amp).describe()}"
          + ("" if d.amp else " (--amp: only pays off on GPUs and CPUs with native bf16)"))
    root = os.path.join(d.out, "data", "VOC2012")
    common = ["--dataset", "synthetic", "--base-size", str(d.size), "--crop-size", str(d.size),
              "--workers", str(d.workers), "--no-pretrained", "--run-dir", os.path.join(d.out, "run"),
              "--seed", str(d.seed)] + (["--no-cuda"] if d.no_cuda else []) + (["--amp"] if d.amp else [])
    common += (["--fused-sgd"] + (["--channels-last"] if d.amp else [])) if d.fast else []
    student = ["--batch-size", str(d.batch_size), "--lr", str(d.lr), *common]
    commands = {
        "teacher (ResNet-101)": ["--backbone", "resnet101", "--epochs", str(d.teacher_epochs), "--batch-size",
                                 str(d.teacher_batch_size), "--lr", str(d.teacher_lr), "--eval-interval",
                                 str(d.teacher_eval_interval), "--checkname", "demo-teacher", *common],
        "baseline (ResNet-18)": ["--backbone", "resnet18", "--epochs", str(d.student_epochs), "--checkname",
                                 "demo-baseline", *student],
        "AttnFD (ResNet-18)": ["--backbone", "resnet18", "--epochs", str(d.student_epochs), "--checkname",
                               "demo-attnfd", "--attn_lambda", str(d.attn_lambda), *student]}
    check_commands(commands, d, cuda)  # every run's values, before the data or anything else is written
    if not os.path.isfile(os.path.join(root, "ImageSets", "Segmentation", "val.txt")):
        print(f"Generating the synthetic dataset in {root} ...")
        generate(os.path.join(d.out, "data"), d.n_train, d.n_val, d.size, d.data_seed, overwrite=d.overwrite)
    os.environ["ATTNFD_SYNTHETIC_ROOT"] = root
    runs = {}
    runs["teacher (ResNet-101)"] = train(commands["teacher (ResNet-101)"])
    teacher_ckpt = os.path.join(runs["teacher (ResNet-101)"][0].experiment_dir, "checkpoint.pth.tar")
    runs["baseline (ResNet-18)"] = train(commands["baseline (ResNet-18)"])
    runs["AttnFD (ResNet-18)"] = train([*commands["AttnFD (ResNet-18)"], "--teacher_path", teacher_ckpt], kd=True)

    results = {}
    for name, (run, secs) in runs.items():
        curve = [(h["epoch"] + 1, h["val"]["mIoU"]) for h in run.state.history if "val" in h]
        results[name] = {"best_mIoU": run.state.best_pred, "final_mIoU": curve[-1][1] if curve else float("nan"),
                         "params_M": num_params(run.model, attention=False) / 1e6, "time_s": secs,
                         "epochs": run.args.epochs, "run": run.experiment_dir, "curve": curve}
    print(f"\n{'model':<22} {'best mIoU':>9} {'final mIoU':>10} {'params':>8} {'time':>7}")
    for name, r in results.items():
        print(f"{name:<22} {100 * r['best_mIoU']:9.2f} {100 * r['final_mIoU']:10.2f} {r['params_M']:7.2f}M "
              f"{r['time_s']:6.0f}s")
    total = time.time() - started
    print(f"{'total (incl. data, start-up)':<42} {total:6.0f}s")
    outputs.write_json(os.path.join(d.out, "demo_results.json"), {"args": vars(d), "results": results,
                                                                  "total_s": total})

    fig = plt.figure(figsize=(6, 4))
    for name, r in results.items():
        plt.plot([e for e, _ in r["curve"]], [100 * v for _, v in r["curve"]], marker="o", ms=3, label=name)
    plt.xlabel("epoch")
    plt.ylabel("val mIoU (%)")
    plt.title("AttnFD demo on synthetic data")
    plt.grid(alpha=0.3)
    plt.legend()
    plt.tight_layout()
    outputs.write_figure(os.path.join(d.out, "demo_curves.png"), fig, dpi=120)
    save_predictions(runs, d, os.path.join(d.out, "demo_predictions.png"), outputs)
    print(f"\nWrote {d.out}/demo_curves.png, {d.out}/demo_predictions.png, {d.out}/demo_results.json")
    return results


@torch.no_grad()
def save_predictions(runs, d, path, outputs, n=4):
    """Rows: image, ground truth, then each model's prediction, for the first ``n`` val images; a legend names the
    class of each colour."""
    val = build_dataset("synthetic", "val", d.size, d.size)
    samples = [val[i] for i in range(min(n, len(val)))]
    fig, axes = plt.subplots(2 + len(runs), len(samples), figsize=(2 * len(samples), 2 * (2 + len(runs))))
    for j, s in enumerate(samples):
        image = s["image"][None]
        rows = [("image", denormalize(image)[0].permute(1, 2, 0).numpy()),
                ("ground truth", decode_segmap(s["label"]))]
        for name, (run, _) in runs.items():
            run.model.eval()
            pred = run.model(image.to(run.device)).argmax(1)[0].cpu()
            rows.append((name, decode_segmap(pred)))
        for i, (title, picture) in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(np.asarray(picture))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(title, fontsize=7)
    from matplotlib.patches import Patch

    palette = get_palette("pascal")
    names = class_names("synthetic")
    keys = [*enumerate(names), (255, "ignored (object borders)")]
    fig.legend(handles=[Patch(facecolor=palette[c] / 255, edgecolor="black", linewidth=0.3, label=name)
                        for c, name in keys], loc="lower center", ncol=4, fontsize=6, frameon=False)
    plt.tight_layout(rect=(0, 0.55 / fig.get_figheight(), 1, 1))  # room for the legend's two rows
    outputs.write_figure(path, fig, dpi=110)


if __name__ == "__main__":
    with one_line_errors():
        main_demo(get_demo_parser().parse_args())
