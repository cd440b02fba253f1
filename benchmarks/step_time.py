"""Time and memory of one student training step, one teacher forward and one distillation step.

The floor of a distillation step is ``student step + teacher forward``; the report gives each phase's
median time over ``--iters`` steps (after ``--warmup``; the phases take turns in one process), its
steady-state peak memory (each phase built and run alone in a fresh process; the peak statistics reset after
the warm-up, so the cuDNN autotuner's trial workspaces are left out: CUDA max allocated and max reserved; CPU:
peak RSS above the process's size after start-up), and the host syncs of one distillation step (``HostSyncs``:
on CUDA every sync, through ``torch.cuda.set_sync_debug_mode``).

python benchmarks/step_time.py --crop 513 --batch-size 6                       # CUDA if available
python benchmarks/step_time.py --crop 257 --batch-size 4 --device cpu --amp --channels-last
python benchmarks/step_time.py ... --json step_time.json
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from distillation import METHODS, build_distiller  # noqa: E402
from modeling import DeepLab  # noqa: E402
from modeling.backbone import BACKBONES  # noqa: E402
from training import SGD, train_step  # noqa: E402
from utils.cli import ArgumentParser, cli_main, number  # noqa: E402
from utils.device import HostSyncs, Precision  # noqa: E402
from utils.loss import SegmentationLosses  # noqa: E402
from utils.outputs import Outputs  # noqa: E402

PHASES = ("student", "teacher", "kd")


COUNT, POSITIVE = number(int, 0), number(int, 1)

def get_args_parser():
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="resnet18", choices=sorted(BACKBONES))
    p.add_argument("--teacher", default="resnet101", choices=sorted(BACKBONES))
    p.add_argument("--crop", type=number(int, 32), default=513)
    p.add_argument("--batch-size", type=number(int, 2), default=6, help="at least 2 (BatchNorm in train mode)")
    p.add_argument("--classes", type=number(int, 2), default=21)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="as train_kd.py --amp")
    p.add_argument("--amp-dtype", default="auto", choices=["auto", "bf16", "fp16"], help="as train_kd.py")
    p.add_argument("--methods", nargs="+", default=["attnfd"], choices=list(METHODS),
                   help="the distillation step's methods, each at its paper's weight")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the student / distiller")
    p.add_argument("--compile-methods", action="store_true", help="as train_kd.py: torch.compile the methods alone")
    p.add_argument("--teacher-train-mode", action=argparse.BooleanOptionalAction, default=True,
                   help="as train_kd.py (the reference's teacher mode; no autograd either way)")
    p.add_argument("--warmup", type=COUNT, default=3)
    p.add_argument("--iters", type=POSITIVE, default=10)
    p.add_argument("--threads", type=POSITIVE, default=None, help="CPU threads (default torch's)")
    p.add_output("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the per-phase peak memory processes (with --compile each would compile again)")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # internal: one phase in this process
    p.add_overwrite()
    return p


def rss_mb(field="VmHWM"):
    """This process's peak RSS (VmHWM), or its RSS now (VmRSS): Linux's /proc (ru_maxrss would carry the parent's
    peak across exec; it is the fallback elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(a, phases):
    """Models, optimizer and the step function of each phase in ``phases`` (only what they need)."""
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    precision = Precision(device, a.amp, a.amp_dtype, channels_last=a.channels_last)
    x = precision.images(torch.randn(a.batch_size, 3, a.crop, a.crop))
    y = torch.randint(0, a.classes, (a.batch_size, a.crop, a.crop), device=device)
    ce = SegmentationLosses().build_loss("ce")
    student = DeepLab(num_classes=a.classes, backbone=a.student) if phases != ["teacher"] else None
    teacher = DeepLab(num_classes=a.classes, backbone=a.teacher, label_channel="lad" in a.methods) \
        if phases != ["student"] else None  # LAD distils from a label-assisted teacher
    if teacher:
        student_ = student or DeepLab(num_classes=a.classes, backbone="mobilenet")
        methods = {n: {h.name: h.value for h in METHODS[n].hyper} for n in a.methods}  # their papers' values
        net = build_distiller(student_, teacher, methods, teacher_train_mode=a.teacher_train_mode)
        if a.compile_methods:
            net.compile_methods()
        needs = set().union(*(m.teacher_needs for m in net.methods.values()))
    net = precision.prepare(net if teacher else student).train()
    opt = SGD([p for p in net.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)  # as the trainer's
    compiled = {m: torch.compile(m) if a.compile else m for m in (student, net) if m is not None}

    def teacher_forward():  # what the distillation step asks of the teacher
        with precision.autocast():
            net.teacher_features(x, logits="logits" in needs, stages="stages" in needs, labels=y)

    fns = {"student": lambda: train_step(compiled[student], ce, opt, precision, x, y),
           "teacher": teacher_forward, "kd": lambda: train_step(compiled[net], ce, opt, precision, x, y)}
    return {p: fns[p] for p in phases}, device


def reset_peak(device):
    """Start the peak statistics again: CUDA's allocator's, or (Linux) the process's peak RSS."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM back to the current RSS
    except OSError:
        pass


def peak_memory(a):
    """Internal (--phase): steady-state peak memory of one phase, built alone in this fresh process, measured over
    3 steps after the warm-up; one JSON line."""
    base_rss = rss_mb("VmRSS")
    fns, device = build(a, [a.phase])
    for _ in range(max(a.warmup, 1)):
        fns[a.phase]()
    reset_peak(device)
    for _ in range(3):
        fns[a.phase]()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak, reserved = (f(device) / 2**20 for f in (torch.cuda.max_memory_allocated, torch.cuda.max_memory_reserved))
    else:
        peak, reserved = max(0.0, rss_mb() - base_rss), float("nan")  # 0: its peak under the RSS at start
    print(json.dumps({"phase": a.phase, "peak_mb": peak, "reserved_mb": reserved}))


def timings(a):
    """Median ms per phase, and the host syncs of one distillation step (op names); the phases take turns (student,
    teacher, kd, student, ...), so drifts in the machine's speed hit all three alike and the ratio stays
    meaningful."""
    fns, device = build(a, list(PHASES))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fns["kd"]()  # compiled, autotuned: then the host syncs of one distillation step
    sync()
    with HostSyncs(device) as syncs:
        fns["kd"]()
    sync()
    times = {p: [] for p in PHASES}
    for i in range(a.warmup + a.iters):
        for phase, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= a.warmup:
                times[phase].append((time.perf_counter() - start) * 1000)
    return {p: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t)} for p, t in times.items()}, \
        syncs.seen


def run(a):
    outputs = Outputs.from_args(get_args_parser(), a, "benchmarks/step_time.py").check()
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{a.threads or torch.get_num_threads()}"
    precision = Precision(dev, a.amp, a.amp_dtype, a.channels_last).describe() + (", compiled" if a.compile else "")
    if a.threads:
        torch.set_num_threads(a.threads)
    forwarded = list(sys.argv[1:])
    if a.json:  # the phases report on stdout; only this process writes the file
        i = next(i for i, arg in enumerate(forwarded) if arg.startswith("--json"))
        del forwarded[i:i + (1 if "=" in forwarded[i] else 2)]
    memory = {p: {"peak_mb": float("nan"), "reserved_mb": float("nan")} for p in PHASES}
    for phase in [] if a.no_memory else PHASES:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *forwarded, "--phase", phase],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: the {phase} phase failed:\n{out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
        memory[phase] = json.loads(out.stdout.strip().splitlines()[-1])
    results, syncs = timings(a)
    for phase in PHASES:
        results[phase].update(memory[phase])
    s, t, k = (results[p]["median_ms"] for p in PHASES)
    ms, mt, mk = (results[p]["peak_mb"] for p in PHASES)
    report = {"device": name, "precision": precision, "crop": a.crop, "batch_size": a.batch_size,
              "student": a.student, "teacher": a.teacher, "teacher_train_mode": a.teacher_train_mode,
              "methods": a.methods,
              "iters": a.iters, "phases": results, "kd_over_floor": k / (s + t),
              "kd_memory_over_sum": mk / (ms + mt), "host_syncs": len(syncs), "host_sync_ops": syncs[:20]}
    mem = "MiB max allocated" if dev.type == "cuda" else "MiB peak RSS growth"
    print(f"device {name}, {precision}, crop {a.crop}, batch {a.batch_size}, median of {a.iters}")
    print(f"student ({a.student}) step {s:9.1f} ms  {ms:8.0f} {mem}")
    print(f"teacher ({a.teacher}) fwd  {t:9.1f} ms  {mt:8.0f} {mem}  "
          f"({'train' if a.teacher_train_mode else 'eval'} mode, no grad)")
    step = "AttnFD step" if a.methods == ["attnfd"] else "+".join(a.methods) + " step"
    print(f"{step:<22} {k:9.1f} ms  {mk:8.0f} {mem}")
    print(f"{step} / (student step + teacher fwd) = {k / (s + t):.3f}; memory / sum = {mk / (ms + mt):.3f}")
    if dev.type == "cuda":
        print(f"max reserved MiB: student {results['student']['reserved_mb']:.0f}, teacher "
              f"{results['teacher']['reserved_mb']:.0f}, step {results['kd']['reserved_mb']:.0f}")
    print(f"host syncs in one {step}: {len(syncs)}" + (f" ({', '.join(syncs[:5])})" if syncs else ""))
    if a.json:
        outputs.write_json(a.json, report)
    return report


main = cli_main(run)  # one-line errors, exit status 2


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    if args.phase:
        if args.threads:
            torch.set_num_threads(args.threads)
        peak_memory(args)
    else:
        main(args)
