"""The CUDA paths in one command, on generated data: one JSON and one table (under 8 minutes on one H100/H200).

1. ``step_time.py`` at crop 513, batch 6, ResNet-101 -> ResNet-18: fp32, ``--amp``, ``--amp --channels-last``,
   with ``--compile-methods``, with ``--compile``: student step, teacher forward, AttnFD step, the ratio to the
   floor, the steady-state peak CUDA memory (allocated, reserved) of each phase alone (fp32 and amp+channels_last),
   the host syncs of one step;
2. the same AttnFD step (``--amp --channels-last``) with the teacher in eval mode, and with each comparison method
   on beside AttnFD, one line each (time, ratio to the floor, host syncs);
3. whole-CLI throughput of ``train_kd.py`` in a steady state (``--iters`` iterations after the first ones):
   plain, ``torchrun --nproc_per_node 1``, and with ``--sync-bn``, beside batch / step time;
4. ``train_kd.py`` for 2 epochs in fp32, ``--amp`` and ``--amp --amp-dtype fp16`` (GradScaler), same data and seed:
   every loss finite, the final train losses within ``--tolerance`` (relative) of fp32's.

A row that fails is reported (its error in the table and the JSON) and the others still run; each command has a
time limit.  It checks the targets of the speed work (on H100/H200-class GPUs): AttnFD step / (student step +
teacher forward) <= 1.10 in fp32 and AMP; every method's step <= 1.5 x the floor, with no host sync;
``--amp --channels-last`` AttnFD step <= 0.5 x fp32; AttnFD-step peak memory <= 1.2 x the student step's + the
teacher forward's; steady-state CLI throughput >= 0.9 x batch / step time; 1-GPU torchrun within 5% of plain.

python benchmarks/gpu_check.py --json gpu_check.json
python benchmarks/gpu_check.py --device cpu --quick      # the CPU dry run: tiny sizes, every section once
"""
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dataloaders.synthetic import generate  # noqa: E402
from distillation import METHODS  # noqa: E402
from modeling import DeepLab  # noqa: E402
from training.loop import MEASUREMENTS  # noqa: E402
from utils.cli import ArgumentParser, cli_main, number  # noqa: E402
from utils.outputs import Outputs  # noqa: E402
from utils.saver import experiment_id, save_atomic  # noqa: E402

STEP_SETTINGS = {"fp32": [], "amp": ["--amp", "--no-memory"], "amp+channels_last": ["--amp", "--channels-last"],
                 "amp+channels_last+compile-methods": ["--amp", "--channels-last", "--compile-methods", "--no-memory"],
                 "amp+channels_last+compile": ["--amp", "--channels-last", "--compile", "--no-memory"]}
LIMIT_S = 240  # one command's time limit


def get_args_parser():
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one case per section (the CPU dry run)")
    p.add_argument("--tolerance", type=number(float, 0), default=0.05,
                   help="largest relative difference of an AMP run's final train loss from fp32's")
    p.add_output("--work", kind="run", default=None,
                 help="folder for data and runs (default: a temporary one); what is there is reused, never replaced")
    p.add_output("--json", default=None, help="write the results to this JSON file")
    p.add_overwrite()
    return p


class Failed(Exception):
    """A row that did not run: its message goes into the table and the JSON."""


def python(*args, env=None, limit=LIMIT_S):
    """Run a script of this project; its stdout, or Failed naming the command and its last line."""
    name = " ".join(os.path.basename(str(a)) for a in args[:1])
    try:
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=limit)
    except subprocess.TimeoutExpired:
        raise Failed(f"{name}: over its {limit} s limit") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise Failed(f"{name} failed: {last[:300]}")
    return out.stdout


def attempt(rows, name, fn):
    """``rows[name] = fn()``, or its failure as ``{"error": ...}``, printed at once either way."""
    start = time.time()
    try:
        rows[name] = fn()
        print(f"  {name}: done in {time.time() - start:.0f} s", flush=True)
    except Exception as e:  # a row that fails is reported; the others still run
        rows[name] = {"error": str(e) if isinstance(e, Failed) else f"{type(e).__name__}: {e}"}
        print(f"  {name}: FAILED ({rows[name]['error']})", flush=True)
    return rows[name]


def step_times(a, work):
    size = ["--crop", "64", "--batch-size", "2", "--iters", "2", "--warmup", "1"] if a.quick else \
        ["--crop", "513", "--batch-size", "6", "--iters", "20", "--warmup", "5"]
    short = [] if a.quick else ["--iters", "10", "--warmup", "3", "--no-memory"]  # the method rows
    base = [os.path.join(ROOT, "benchmarks", "step_time.py"), "--device", a.device, *size]
    if a.quick:
        base += ["--student", "mobilenet", "--teacher", "resnet18"]
    # a step_time.py run that measured no memory (--no-memory) reports NaN peaks
    runs = {"fp32": ["--no-memory"]} if a.quick else dict(STEP_SETTINGS)  # --quick: each code path once
    methods = ["kd"] if a.quick else [m for m in METHODS if m != "attnfd"]
    variants = {**({} if a.quick else {"teacher-eval": ["--no-teacher-train-mode", *short]}),
                **{f"+{m}": ["--methods", "attnfd", m, *short] + (["--no-memory"] if a.quick else [])
                   for m in methods}}
    rows = {}
    for name, flags in [*runs.items(), *((k, ["--amp", "--channels-last"] + v) for k, v in variants.items())]:
        path = os.path.join(work, f"step-{name}.json")

        def one(flags=flags, path=path):
            python(*base, *flags, "--json", path)
            with open(path) as f:
                return json.load(f)

        attempt(rows, name, one)
    return rows


def throughput(a, work):
    """Steady-state train_kd.py images/s per launcher ({launcher: row}; a failed launcher's row is its error)."""
    size = ["--size", "48", "--images", "2", "--batch-size", "2", "--iters", "1", "--settings", "fp32", "--student",
            "mobilenet", "--teacher", "resnet18"] if a.quick \
        else ["--size", "513", "--images", "96", "--batch-size", "6", "--iters", "200", "--settings",
              "amp+channels_last"]
    rows = {}
    for launcher in ["plain"] if a.quick else ["plain", "torchrun", "torchrun-sync-bn"]:
        path = os.path.join(work, f"throughput-{launcher}.json")

        def one(launcher=launcher, path=path):
            python(os.path.join(ROOT, "benchmarks", "throughput.py"), *size, "--scripts", "train_kd.py",
                   "--launchers", launcher, "--work", os.path.join(work, "throughput"), "--json", path,
                   *(["--no-cuda"] if a.device == "cpu" else []), limit=2 * LIMIT_S)
            with open(path) as f:
                return json.load(f)["rows"][0]

        attempt(rows, launcher, one)
    return rows


def amp_agreement(a, work):
    """Final train losses of 2-epoch train_kd.py runs in fp32, bf16/auto AMP and fp16 AMP from the same seed."""
    n, size = (4, 32) if a.quick else (48, 257)
    data = os.path.join(work, "amp-data")
    if not os.path.isdir(os.path.join(data, "VOC2012")):  # what a --work folder holds is reused, never replaced
        generate(data, n, 4, size, seed=0)
    teacher = os.path.join(work, "amp-teacher.pth.tar")
    if not os.path.isfile(teacher):
        torch.manual_seed(0)
        save_atomic({"state_dict": DeepLab(num_classes=7, backbone="resnet18").state_dict(),
                     "args": {"backbone": "resnet18"}}, teacher)
    env = {**os.environ, "ATTNFD_SYNTHETIC_ROOT": os.path.join(data, "VOC2012")}
    common = [os.path.join(ROOT, "train_kd.py"), "--dataset", "synthetic", "--base-size", str(size), "--crop-size",
              str(size), "--batch-size", "2" if a.quick else "6", "--epochs", "1" if a.quick else "2", "--lr", "0.01",
              "--no-pretrained",
              "--workers", "0" if a.quick else "4", "--teacher_path", teacher, "--no-val", "--seed", "3",
              "--run-dir", os.path.join(work, "amp-runs")]
    common += ["--no-cuda"] if a.device == "cpu" else []
    out = {}
    precisions = {"fp32": [], "amp": ["--amp"], "amp-fp16": ["--amp", "--amp-dtype", "fp16"]}
    if a.quick:  # fp16 is the one through the GradScaler
        del precisions["amp"]
    for name, flags in precisions.items():
        python(*common, *flags, "--checkname", name, env=env)
        runs = glob.glob(os.path.join(work, "amp-runs", "synthetic", name, "experiment_*"))
        with open(os.path.join(max(runs, key=experiment_id), "history.json")) as f:  # this run's (a --work reused)
            history = json.load(f)
        losses = [v for h in history for k, v in h["train"].items()
                  if k not in MEASUREMENTS]
        out[name] = {"final_loss": history[-1]["train"]["total_loss_iter"],
                     "finite": all(math.isfinite(v) for v in losses)}
    for name in set(out) - {"fp32"}:
        out[name]["relative_to_fp32"] = abs(out[name]["final_loss"] / out["fp32"]["final_loss"] - 1)
    return out


def fmt(value, spec=".1f"):
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def report(r, a):
    """The table, and the targets' verdicts (a target whose rows failed: NOT MEASURED)."""
    lines = ["| run | student step ms | teacher fwd ms | step ms | step / floor | peak MiB (step / sum) | reserved MiB "
             "| host syncs |", "|---|---|---|---|---|---|---|---|"]
    for name, s in r["step"].items():
        if "error" in s:
            lines.append(f"| {name} | FAILED: {s['error']} |")
            continue
        ph = s["phases"]
        peak = f"{ph['kd']['peak_mb']:.0f} ({s['kd_memory_over_sum']:.2f})" if math.isfinite(ph["kd"]["peak_mb"]) \
            else "-"
        lines.append(f"| {name} | {ph['student']['median_ms']:.1f} | {ph['teacher']['median_ms']:.1f} | "
                     f"{ph['kd']['median_ms']:.1f} | {s['kd_over_floor']:.3f} | {peak} | "
                     f"{fmt(ph['kd'].get('reserved_mb'), '.0f')} | {s.get('host_syncs', '-')} |")
    lines += ["", "| train_kd.py | steady images/s | epoch images/s | waiting for data |", "|---|---|---|---|"]
    for launcher, t in r["throughput"].items():
        lines.append(f"| {launcher} | FAILED: {t['error']} |" if "error" in t else
                     f"| {launcher} | {fmt(t['steady_images_per_s'], '.2f')} | {t['images_per_s']:.2f} | "
                     f"{100 * t['data_wait']:.0f}% |")
    lines += ["", "| precision | final train loss | relative to fp32 | finite |", "|---|---|---|---|"]
    amp = r["amp"]
    lines += [f"| FAILED: {amp['error']} |"] if "error" in amp else [
        f"| {k} | {v['final_loss']:.4f} | {v.get('relative_to_fp32', 0):.3f} | {v['finite']} |" for k, v in amp.items()]

    ok = {k: s for k, s in r["step"].items() if "error" not in s}
    tput = {k: t for k, t in r["throughput"].items() if "error" not in t}
    kd_ms = {k: s["phases"]["kd"]["median_ms"] for k, s in ok.items()}
    methods = [k for k in r["step"] if k.startswith("+")]
    targets = {  # name: its verdict; None, a KeyError or a TypeError (its rows failed): not measured
        "AttnFD step / floor <= 1.10 (fp32)": lambda: ok["fp32"]["kd_over_floor"] <= 1.10,
        "AttnFD step / floor <= 1.10 (amp+channels_last)": lambda: ok["amp+channels_last"]["kd_over_floor"] <= 1.10,
        "AttnFD steady peak memory <= 1.2 x (student + teacher) (fp32)":
            lambda: None if math.isnan(ok["fp32"]["kd_memory_over_sum"]) else ok["fp32"]["kd_memory_over_sum"] <= 1.2,
        "amp+channels_last AttnFD step <= 0.5 x fp32": lambda: kd_ms["amp+channels_last"] <= 0.5 * kd_ms["fp32"],
        "every method's step <= 1.5 x the floor (amp+channels_last)":
            lambda: all(ok[k]["kd_over_floor"] <= 1.5 for k in methods),
        "no host sync in a step of any method": lambda: all(ok[k]["host_syncs"] == 0 for k in ["fp32", *methods]),
        f"AMP final losses within {a.tolerance:g} of fp32, all finite":
            lambda: all(v["finite"] and v.get("relative_to_fp32", 0) <= a.tolerance for v in amp.values()),
    }
    if not a.quick:
        targets["steady train_kd.py images/s >= 0.9 x batch / step (amp+channels_last)"] = \
            lambda: tput["plain"]["steady_images_per_s"] >= 0.9 * 6 / (kd_ms["amp+channels_last"] / 1000)
        targets["torchrun 1 process within 5% of plain (steady)"] = \
            lambda: tput["torchrun"]["steady_images_per_s"] >= 0.95 * tput["plain"]["steady_images_per_s"]
    checks = {}
    for name, verdict in targets.items():
        try:
            verdict = verdict()
            checks[name] = None if verdict is None else bool(verdict)
        except (KeyError, TypeError):
            checks[name] = None
    verdicts = {None: "NOT MEASURED", True: "PASS", False: "FAIL"}
    lines += [""] + [f"{verdicts[v]}  {name}" for name, v in checks.items()]
    return "\n".join(lines), checks


def run(a):
    outputs = Outputs.from_args(get_args_parser(), a, "benchmarks/gpu_check.py")
    if a.work:
        outputs.writes_run("--work", a.work)
    outputs.check()
    work = a.work or tempfile.mkdtemp(prefix="attnfd-gpu-check-")
    os.makedirs(work, exist_ok=True)
    device = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    print(f"{device}, torch {torch.__version__}; work folder {work}", flush=True)
    r = {"device": device, "torch": torch.__version__, "quick": a.quick}
    start = time.time()
    print("step times:", flush=True)
    r["step"] = step_times(a, work)
    print("throughput:", flush=True)
    r["throughput"] = throughput(a, work)
    print("AMP agreement:", flush=True)
    attempt(r, "amp", lambda: amp_agreement(a, work))
    r["seconds"] = round(time.time() - start)
    table, checks = report(r, a)
    r["checks"] = checks
    print(table)
    print(f"\n{r['seconds']} s in all")
    if a.json:
        outputs.write_json(a.json, r)
    return r


main = cli_main(run)  # one-line errors, exit status 2


if __name__ == "__main__":
    main(get_args_parser().parse_args())
