"""Mixed precision, channels_last, the foreach optimizer and the benchmark scripts, on CPU."""
import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distillation import AttnFD, Distiller
from modeling import DeepLab, model_from_checkpoint
from training import SGD, get_args_parser, main, train_step
from utils.device import Precision, amp_dtype
from utils.loss import SegmentationLosses

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def toy_batch(n=4, size=32, classes=3, seed=0):
    """Images whose left half is bright where the label is 1, right half dark where it is 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.1
    y = torch.zeros(n, size, size, dtype=torch.long)
    x[:, :, :, : size // 2] += 1.0
    y[:, :, : size // 2] = 1
    x[:, :, size // 2:, size // 2:] -= 1.0
    y[:, size // 2:, size // 2:] = 2
    return x, y


def test_amp_dtype_choice(monkeypatch):
    """The one mock here: the hardware capability queries, to see the choice on hardware this machine is not."""
    import utils.device as device

    assert amp_dtype(CPU, False) is None
    assert amp_dtype(CPU, True, "fp16") == torch.float16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert amp_dtype(CPU, True) == torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert amp_dtype(CPU, True) is None and amp_dtype(CPU, True, "bf16") == torch.bfloat16
    assert "no native bf16, so fp32" in Precision(CPU, True).describe()
    gpu = torch.device("cuda")
    queried = []
    for native in (True, False):  # a GPU whose bf16 is only emulated (V100, T4) gets fp16 + GradScaler
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True, native=native: queried.append(including_emulation)
                            or native)
        assert amp_dtype(gpu, True) == (torch.bfloat16 if native else torch.float16)
    assert queried == [False, False]
    monkeypatch.undo()
    p = Precision(CPU, True, "fp16")
    assert p.scaler.is_enabled() and not Precision(CPU, True, "bf16").scaler.is_enabled()
    assert "fp32" in Precision(CPU).describe() and "bf16" in Precision(CPU, True, "bf16").describe()


def train_steps(model, precision, x, y, steps, poison_first=False):
    """``steps`` SGD steps of ``model`` on one batch, dropout drawn from seed 1 (two runs draw the same masks); the
    losses, and how many steps the GradScaler skipped.  ``poison_first``: the first step's gradient of one
    parameter is made infinite (an overflow on every machine)."""
    opt = SGD(model.param_groups(0.01), lr=0.01, momentum=0.9)
    ce = SegmentationLosses().build_loss("ce")
    hooks = [next(model.parameters()).register_hook(lambda g: g * float("inf"))] if poison_first else []
    losses, skipped = [], 0
    with torch.random.fork_rng():
        torch.manual_seed(1)
        for _ in range(steps):
            scale = precision.scaler.get_scale() if precision.scaler.is_enabled() else 1.0
            logged = train_step(model, ce, opt, precision, precision.images(x), y)
            assert logged["total_loss_iter"].dtype == torch.float32
            losses.append(float(logged["total_loss_iter"]))
            skipped += precision.scaler.is_enabled() and precision.scaler.get_scale() < scale
            for hook in hooks:
                hook.remove()
            hooks = []
    return losses, skipped


@pytest.mark.numerics
def test_bf16_trains_a_tiny_problem_on_cpu_as_fp32_does_from_the_same_start():
    """bf16 autocast against fp32 from the same weights and dropout masks, on this machine: the first loss is the
    fp32 one up to rounding, and the loss falls at least half as far as fp32's in as many steps.  No threshold of
    its own: the convergence this CPU's kernels give in fp32 is the reference."""
    torch.manual_seed(0)
    model = DeepLab(num_classes=3, backbone="mobilenet")
    reference = copy.deepcopy(model)
    precision, fp32 = Precision(CPU, True, "bf16", channels_last=True), Precision(CPU, channels_last=True)
    precision.prepare(model).train()
    fp32.prepare(reference).train()
    x, y = toy_batch(4)
    losses, _ = train_steps(model, precision, x, y, 12)
    ref, _ = train_steps(reference, fp32, x, y, 12)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert abs(losses[0] - ref[0]) <= 0.15 * ref[0], (losses[0], ref[0])  # the same weights: forward rounding
    assert losses[0] - losses[-1] >= 0.5 * (ref[0] - ref[-1]) > 0, (losses, ref)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.numerics
def test_fp16_through_the_gradscaler_skips_an_overflowing_step_and_stays_finite_in_fp32():
    """fp16 autocast on CPU (the GPU path of older GPUs): what holds on every CPU.  A step whose gradients
    overflow (made infinite) is skipped, the weights untouched, the scale halved; the steps after it are
    applied, every loss is finite and the weights stay fp32.  How far fp16 training gets on a CPU depends on its
    kernels (native AVX512-FP16 or not) and is not asserted."""
    torch.manual_seed(0)
    model = DeepLab(num_classes=3, backbone="mobilenet")
    precision = Precision(CPU, True, "fp16", channels_last=True)
    precision.prepare(model).train()
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    x, y = toy_batch(2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses, skipped = train_steps(model, precision, x, y, 1, poison_first=True)
    assert skipped == 1 and precision.scaler.get_scale() == 2.0 ** 9
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())  # the step was not applied
    more, skipped_more = train_steps(model, precision, x, y, 5)
    assert skipped_more < 5 and any(not torch.equal(v, before[k]) for k, v in model.named_parameters())
    assert all(torch.isfinite(torch.tensor(losses + more))), losses + more
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.numerics
def test_attnfd_step_under_bf16_has_fp32_finite_terms_close_to_fp32():
    """Each term under bf16 autocast is fp32, finite, and within 10% of the fp32 term (bf16 keeps 8 bits of
    mantissa: 0.4% a value; 5% held on every kernel tried, AMX, AVX512-BF16 and AVX2)."""
    torch.manual_seed(0)
    student, teacher = DeepLab(num_classes=3, backbone="mobilenet"), DeepLab(num_classes=3, backbone="resnet18")
    kd = Distiller(student, teacher, [AttnFD(student, teacher)]).train()
    x, _ = toy_batch()
    with torch.no_grad():
        with torch.random.fork_rng():
            _, fp32 = kd(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, bf16 = kd(x)
    assert logits.dtype == torch.bfloat16
    for k, v in bf16.items():
        error = abs(float(v) - float(fp32[k]))
        assert v.dtype == torch.float32 and torch.isfinite(v)
        assert error < 0.1 * float(fp32[k]) + 1e-4, (k, float(v), float(fp32[k]))


@pytest.mark.numerics
def test_channels_last_changes_nothing_but_the_layout():
    torch.manual_seed(0)
    model = DeepLab(num_classes=3, backbone="resnet18").eval()
    x, _ = toy_batch()
    ref = model(x)
    precision = Precision(CPU, channels_last=True)
    precision.prepare(model)
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # NHWC runs other kernels (another summation order): fp32 rounding of the logits' scale
    torch.testing.assert_close(model(precision.images(x)), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


@pytest.mark.numerics
@pytest.mark.parametrize("fused", [False, True])
def test_sgd_matches_the_plain_update(fused):
    """The trainer's SGD gives the per-tensor loop's weights: the foreach update (default) bit for bit, the fused one
    (--fused-sgd) to the last digit; both also for a parameter whose first gradient comes later (AttnFD's connectors
    after warm-up: torch's fused SGD alone raises a TypeError there) and after resuming from a state dict the other
    update path wrote."""
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(64, 48)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    kw = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    fast, plain = SGD(a, fused=fused, **kw), torch.optim.SGD(b, foreach=False, **kw)
    for step in range(4):
        if step == 2:  # resume: a state dict written by the other path, loaded into a fresh optimizer
            other = SGD([torch.nn.Parameter(p.detach().clone()) for p in a], fused=not fused, **kw)
            other.load_state_dict(fast.state_dict())
            fast = SGD(a, fused=fused, **kw)
            fast.load_state_dict(other.state_dict())
            assert [(g["fused"], g["foreach"]) for g in fast.param_groups] == [(fused or None, None if fused else True)]
        for i, (p, q) in enumerate(zip(a, b)):
            if i == 2 and step == 0:  # a parameter whose first gradient comes later
                p.grad = q.grad = None
                continue
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fast.step()
        plain.step()
    for p, q in zip(a, b):
        if fused:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)  # FMA or not, per CPU: 1e-5 of an lr x grad step
        else:
            assert torch.equal(p, q)


def test_checkpoint_written_under_amp_is_fp32_and_predicts_like_bf16(tmp_path, monkeypatch):
    """train.py --amp --channels-last writes an fp32 checkpoint; rebuilt in fp32 it predicts what the bf16
    model predicts, up to bf16 tolerance."""
    from dataloaders.synthetic import generate

    root = generate(tmp_path / "data", n_train=8, n_val=2, size=48, seed=0)
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", root)
    args = get_args_parser().parse_args([
        "--dataset", "synthetic", "--backbone", "mobilenet", "--base-size", "48", "--crop-size", "48",
        "--batch-size", "4", "--epochs", "2", "--lr", "0.05", "--workers", "0", "--no-pretrained", "--no-cuda",
        "--amp", "--channels-last", "--run-dir", str(tmp_path / "run")])
    run = main(args)
    assert all(torch.isfinite(torch.tensor(h["train"]["total_loss_iter"])) for h in run.state.history)
    ckpt = torch.load(Path(run.experiment_dir) / "checkpoint.pth.tar", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["state_dict"].values())
    model, _, saved = model_from_checkpoint(ckpt)
    assert saved["amp"] and saved["channels_last"]
    model.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).float()
    error = (fp32 - bf16).abs().max()
    assert error < 0.1 * fp32.abs().max() + 0.05
    top2 = fp32.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * error  # pixels bf16's error cannot flip, on any CPU
    assert clear.float().mean() > 0.2 and (fp32.argmax(1) == bf16.argmax(1))[clear].all()


def test_gpu_check_dry_run_on_cpu(tmp_path):
    """benchmarks/gpu_check.py --quick on the CPU: every section runs (step_time.py without its memory processes,
    which the next test runs in-process; a variant with another method under --amp --channels-last;
    throughput.py; 2-epoch fp32 and fp16 + GradScaler runs) and lands in one JSON with the targets' verdicts
    (which a CPU at these sizes need not pass)."""
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                        "--work", str(tmp_path / "work"), "--json", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r["step"]) == {"fp32", "+kd"}  # --quick: each code path once (+kd under --amp --channels-last)
    for row in r["step"].values():
        assert set(row["phases"]) == {"student", "teacher", "kd"} and row["kd_over_floor"] > 0
        assert all(ph["median_ms"] > 0 for ph in row["phases"].values())
    assert r["step"]["+kd"]["methods"] == ["attnfd", "kd"]
    precision = r["step"]["+kd"]["precision"]
    assert "channels_last" in precision and ("bf16" in precision or "no native bf16" in precision)
    assert all(row["host_syncs"] == 0 for row in r["step"].values())  # seen by the dispatcher on CPU
    assert list(r["throughput"]) == ["plain"]
    assert all(t["steady_images_per_s"] > 0 and t["images_per_s"] > 0 for t in r["throughput"].values())
    assert set(r["amp"]) == {"fp32", "amp-fp16"} and all(v["finite"] for v in r["amp"].values())
    assert r["checks"]["no host sync in a step of any method"] is True
    assert r["checks"]["AttnFD step / floor <= 1.10 (amp+channels_last)"] is None  # --quick: not run
    assert "NOT MEASURED" in p.stdout and ("PASS" in p.stdout or "FAIL" in p.stdout)


def test_gpu_check_reports_a_failing_row_and_goes_on():
    """A row that fails (a command over its limit, an error) is its message in the table; the targets that read it
    are NOT MEASURED, the others are judged."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    rows = {}
    gpu_check.attempt(rows, "fp32", lambda: gpu_check.python("-c", "import sys; sys.exit('broken here')"))
    assert rows["fp32"] == {"error": "-c failed: broken here"}
    phases = {p: {"median_ms": 10.0, "peak_mb": float("nan")} for p in ("student", "teacher", "kd")}
    rows["+kd"] = {"phases": phases, "kd_over_floor": 1.2, "kd_memory_over_sum": float("nan"), "host_syncs": 0}
    r = {"step": rows, "throughput": {"plain": {"error": "throughput.py: over its 480 s limit"}},
         "amp": {"fp32": {"final_loss": 1.0, "finite": True}}}
    table, checks = gpu_check.report(r, argparse.Namespace(quick=True, tolerance=0.05))
    assert "| fp32 | FAILED: -c failed: broken here |" in table and "| plain | FAILED: throughput.py" in table
    assert checks["AttnFD step / floor <= 1.10 (fp32)"] is None  # its row failed
    assert checks["every method's step <= 1.5 x the floor (amp+channels_last)"] is True
    assert checks["AMP final losses within 0.05 of fp32, all finite"] is True


def test_step_time_phases_and_their_peak_memory(capsys):
    """What each of step_time.py's per-phase processes runs (peak memory of one phase built alone), and the timing
    loop of its main process, here in-process on tiny inputs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import step_time

    a = step_time.get_args_parser().parse_args(["--device", "cpu", "--student", "mobilenet", "--teacher", "resnet18",
                                                "--crop", "32", "--batch-size", "2", "--warmup", "0", "--iters", "1",
                                                "--methods", "attnfd", "overhaul", "--phase", "kd"])
    step_time.peak_memory(a)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["phase"] == "kd" and line["peak_mb"] >= 0
    times, syncs = step_time.timings(a)
    assert syncs == []
    assert set(times) == set(step_time.PHASES) and all(t["median_ms"] > 0 for t in times.values())
