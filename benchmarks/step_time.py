"""Time one training step of a student, a teacher forward and one AttnFD step (the [4/8] floor is
``kd step = student step + teacher forward``).  Prints milliseconds per step; no accuracy involved.

python benchmarks/step_time.py --crop 513 --batch-size 6            # CUDA if available
python benchmarks/step_time.py --crop 128 --batch-size 4 --device cpu
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distillation import AttnFD  # noqa: E402
from modeling import DeepLab  # noqa: E402
from utils.loss import SegmentationLosses  # noqa: E402


def timed(fn, device, warmup, iters):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="resnet18")
    p.add_argument("--teacher", default="resnet101")
    p.add_argument("--crop", type=int, default=513)
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    student = DeepLab(num_classes=a.classes, backbone=a.student).to(device).train()
    teacher = DeepLab(num_classes=a.classes, backbone=a.teacher).to(device)
    kd = AttnFD(student, teacher).to(device).train()
    x = torch.randn(a.batch_size, 3, a.crop, a.crop, device=device)
    y = torch.randint(0, a.classes, (a.batch_size, a.crop, a.crop), device=device)
    ce = SegmentationLosses().build_loss("ce")
    opt = torch.optim.SGD(list(student.parameters()) + list(kd.extra_modules().parameters()), lr=1e-4,
                          momentum=0.9)

    def student_step():
        opt.zero_grad(set_to_none=True)
        ce(student(x), y).backward()
        opt.step()

    def teacher_forward():
        kd.teacher_features(x)

    def kd_step():
        opt.zero_grad(set_to_none=True)
        logits, terms = kd(x)
        (ce(logits, y) + sum(terms.values())).backward()
        opt.step()

    s = timed(student_step, device, a.warmup, a.iters)
    t = timed(teacher_forward, device, a.warmup, a.iters)
    k = timed(kd_step, device, a.warmup, a.iters)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    print(f"device {name}, crop {a.crop}, batch {a.batch_size}, fp32")
    print(f"student ({a.student}) step  {s:8.1f} ms")
    print(f"teacher ({a.teacher}) fwd   {t:8.1f} ms")
    print(f"AttnFD step             {k:8.1f} ms   (floor {s + t:.1f} ms, overhead {100 * (k / (s + t) - 1):+.1f}%)")


if __name__ == "__main__":
    main()
