"""What a model costs at inference: parameters, FLOPs and measured latency / throughput, as a markdown table.

python benchmarks/cost.py --models resnet101 resnet18 mobilenet --size 513              # CUDA if available
python benchmarks/cost.py --models pretrained/teacher-pascal.pth.tar run/.../model_best.pth.tar --device cpu
python benchmarks/cost.py --models resnet18 --size 513 --precision fp32 amp --reps 20 --markdown cost.md

A model is a backbone name (random weights, ``--classes`` classes) or a checkpoint (its architecture from
its recorded args).  Parameters are counted with and without the CBAM modules (the inference graph of a
model without ``attention_in_path`` does not run them; the paper's Params column leaves them out).
FLOPs come from ``torch.utils.flop_counter`` for one image of ``--size`` (a multiply-add counts as 2).
Latency is the median over ``--reps`` forward passes of a batch of ``--batch-size`` after ``--warmup``
passes (CUDA: synchronised), in fp32 and under ``--amp`` autocast (bf16 where native, else fp16).
``--onnxruntime`` adds the latency of the model exported by export.py, run by onnxruntime on the CPU
with as many threads as torch (needs ``pip install -r requirements-export.txt``).
"""
import os
import statistics
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from modeling import DeepLab, num_params  # noqa: E402
from modeling.backbone import BACKBONES  # noqa: E402
from utils.cli import ArgumentParser, cli_main, number  # noqa: E402
from utils.device import Precision  # noqa: E402
from utils.export import ExportError, export_onnx  # noqa: E402
from utils.inference import load_model  # noqa: E402
from utils.outputs import Outputs  # noqa: E402
from utils.saver import CheckpointError  # noqa: E402

COUNT, POSITIVE = number(int, 0), number(int, 1)

def get_args_parser():
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_input("--models", kind="files", nargs="+", default=["resnet101", "resnet18", "mobilenet"],
                help="backbone names and/or checkpoint files")
    p.add_argument("--size", type=POSITIVE, default=513, help="square input size")
    p.add_argument("--classes", type=number(int, 2), default=21, help="classes of models built from a backbone name")
    p.add_argument("--batch-size", type=POSITIVE, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", nargs="+", default=["fp32", "amp"], choices=["fp32", "amp"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=COUNT, default=3)
    p.add_argument("--reps", type=COUNT, default=10, help="timed forward passes (0: no latency columns)")
    p.add_argument("--onnxruntime", action="store_true", help="also time the ONNX export under onnxruntime (CPU)")
    p.add_argument("--threads", type=POSITIVE, default=None, help="CPU threads (default torch's)")
    p.add_output("--markdown", default=None, help="also write the table to this file")
    p.add_output("--json", default=None, help="also write the rows to this JSON file ({\"rows\": [...]})")
    p.add_overwrite()
    return p


def build(spec, classes):
    if spec in BACKBONES:
        return spec, DeepLab(num_classes=classes, backbone=spec)
    return os.path.basename(spec), load_model(spec, flag="--models")[0]


def flops(model, size):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


def median_ms(step, warmup, reps, cuda=False):
    """Median wall time of ``step()`` over ``reps`` calls after ``warmup`` (CUDA: synchronised)."""
    times = []
    for i in range(warmup + reps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def latency_ms(model, x, precision, warmup, reps):
    def step():
        with torch.no_grad(), precision.autocast():
            model(x)
    return median_ms(step, warmup, reps, cuda=x.device.type == "cuda")


def onnxruntime_ms(model, a):
    """Median latency of the model exported to ONNX (export.py's graph) under onnxruntime's CPU provider."""
    import numpy as np
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(model.cpu(), path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((a.batch_size, 3, a.size, a.size), dtype=np.float32)
    return median_ms(lambda: session.run(None, {"image": x}), a.warmup, a.reps)


def measure(a):
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    rows = []
    for spec in a.models:
        name, model = build(spec, a.classes)
        model.eval()
        row = {"model": name, "backbone": model.backbone_name, "classes": model.num_classes,
               "params_M": num_params(model, attention=False) / 1e6, "params_with_cbam_M": num_params(model) / 1e6,
               "GFLOPs": flops(model, a.size) / 1e9, "size": a.size}
        if a.reps:
            for name_ in a.precision:
                precision = Precision(device, amp=name_ == "amp", channels_last=a.channels_last)
                net = precision.prepare(model.to(device))
                x = precision.images(torch.randn(a.batch_size, 3, a.size, a.size))
                ms = latency_ms(net, x, precision, a.warmup, a.reps)
                label = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[precision.dtype]
                row[f"{name_}_ms"], row[f"{name_}_img_s"], row[f"{name_}_label"] = ms, 1000 * a.batch_size / ms, label
            if a.onnxruntime:
                ms = onnxruntime_ms(model, a)
                row["ort_ms"], row["ort_img_s"] = ms, 1000 * a.batch_size / ms
        rows.append(row)
    return rows


def markdown(rows, a):
    head = ["model", "Params (M)", "with CBAM (M)", f"GFLOPs @{a.size}"]
    for p in a.precision if a.reps else []:
        label = rows[0].get(f"{p}_label", p)
        head += [f"{label} ms", f"{label} img/s"]
    if a.reps and a.onnxruntime:
        head += ["ONNX Runtime fp32 ms", "img/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['params_M']:.2f}", f"{r['params_with_cbam_M']:.2f}", f"{r['GFLOPs']:.1f}"]
        for p in a.precision if a.reps else []:
            cells += [f"{r[f'{p}_ms']:.1f}", f"{r[f'{p}_img_s']:.2f}"]
        if a.reps and a.onnxruntime:
            cells += [f"{r['ort_ms']:.1f}", f"{r['ort_img_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    where = f"{a.device}" + (f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else
                             f" ({torch.get_num_threads()} threads)")
    lines.append(f"\nbatch {a.batch_size}, {a.size}x{a.size}, {where}, median of {a.reps} after {a.warmup} warm-up")
    return "\n".join(lines)


def run(a):
    outputs = Outputs.from_args(get_args_parser(), a, "benchmarks/cost.py").check()
    rows = measure(a)
    table = markdown(rows, a)
    print(table)
    if a.markdown:
        outputs.write_text(a.markdown, table + "\n")
    if a.json:
        outputs.write_json(a.json, {"rows": rows})
    return rows


main = cli_main(run, CheckpointError, ExportError)  # one-line errors, exit status 2


if __name__ == "__main__":
    main(get_args_parser().parse_args())
