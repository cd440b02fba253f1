"""export.py (ONNX / torch.export / TorchScript with a parity check) and benchmarks/cost.py, through the real CLIs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_random_checkpoint

from modeling import DeepLab
from modeling.layers import AtrousConv2d, any_input_size
from utils.outputs import Outputs

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd, check=True):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def parities(stdout):
    """{shape: (max abs error, argmax agreement %)} from export.py's report."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("parity "):
            shape, rest = line[len("parity "):].split(": ")
            err = float(rest.split("max abs error ")[1].split(",")[0])
            out[shape] = (err, float(rest.split("argmax agreement ")[1].rstrip("%")))
    return out


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet"])
def test_onnx_export_of_a_student_passes_the_parity_check_at_two_sizes(backbone, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    ckpt = save_random_checkpoint(tmp_path / "student.pth.tar", backbone, num_classes=21)
    out = tmp_path / "student.onnx"
    # 65 px: where the dilated convolutions' 1x1 shortcut would apply, unlike the 257 px example input
    p = run(ROOT / "export.py", "--checkpoint", ckpt, "--format", "onnx", "--output", out,
            "--check-size", "1", "129", "129", "--check-size", "2", "65", "97", cwd=tmp_path)
    got = parities(p.stdout)
    assert set(got) == {"1x3x129x129", "2x3x65x97"}
    # ONNX Runtime's kernels against PyTorch's, on random weights (many near-ties): 1 pixel in 1000 may flip
    assert all(err <= 1e-4 and agree >= 99.9 for err, agree in got.values()), got
    graph = onnx.load(str(out)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3])), dims  # dynamic
    assert not list(tmp_path.glob("tmp-*"))


def test_exported_argmax_agrees_with_pytorch_on_real_sized_inputs(tmp_path):
    """>= 99.9% of the pixels of VOC-sized (500x375) and crop-sized (513) inputs, fp32."""
    pytest.importorskip("onnxruntime")
    from utils import export

    torch.manual_seed(0)
    model = DeepLab(num_classes=21, backbone="mobilenet").eval()
    for m in model.modules():  # trained-like BN statistics, so that the logits are not all near-ties
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    path = str(tmp_path / "m.onnx")
    export.export(model, "onnx", path, Outputs("export.py").writes("--output", path).check())
    results = export.parity(model, "onnx", str(tmp_path / "m.onnx"), [(1, 375, 500), (1, 513, 513)])
    for shape, err, agree in results:
        assert agree >= 0.999 and err <= 1e-4, (shape, err, agree)


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_torch_export_and_torchscript_pass_the_parity_check_at_any_size(fmt, tmp_path):
    from utils.export import runner

    ckpt = save_random_checkpoint(tmp_path / "student.pth.tar", "mobilenet", num_classes=5)
    out = tmp_path / f"student.{fmt}"
    p = run(ROOT / "export.py", "--checkpoint", ckpt, "--format", fmt, "--output", out,
            "--check-size", "1", "97", "65", "--check-size", "3", "40", "56", cwd=tmp_path)
    assert parities(p.stdout)["1x3x97x65"][0] <= 1e-4 and parities(p.stdout)["3x3x40x56"][1] == 100
    assert runner(fmt, str(out))(torch.randn(2, 3, 40, 56).numpy()).shape == (2, 5, 40, 56)
    assert not list(tmp_path.glob("tmp-*"))


def test_the_tolerance_gate_exits_with_1(tmp_path, capsys):
    import export  # the CLI, in-process (a second CLI start would only add its import time)

    ckpt = save_random_checkpoint(tmp_path / "student.pth.tar", "mobilenet", num_classes=5)
    args = export.get_args_parser().parse_args(["--checkpoint", str(ckpt), "--format", "pt2", "--output",
                                                str(tmp_path / "s.pt2"), "--check-size", "1", "64", "64"])
    args.tolerance = -1.0  # argparse refuses a negative one; an impossible bound forces the gate
    with pytest.raises(SystemExit) as exit_:
        export.main(args)
    assert exit_.value.code == 1 and "exceeds --tolerance" in capsys.readouterr().err


def test_export_bad_input_is_one_line_and_writes_nothing(tmp_path):
    p = run(ROOT / "export.py", "--checkpoint", tmp_path / "none.pth.tar", "--format", "onnx", "--output",
            tmp_path / "x.onnx", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "--checkpoint: no checkpoint at" in p.stderr and p.stderr.count("\n") == 1
    ckpt = save_random_checkpoint(tmp_path / "s.pth.tar", "mobilenet", num_classes=5)
    p = run(ROOT / "export.py", "--checkpoint", ckpt, "--format", "torchscript", "--output",
            tmp_path / "missing" / "x.pt", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr and not (tmp_path / "missing").exists()
    assert not list(tmp_path.rglob("tmp-*")) and not list(tmp_path.glob("*.onnx"))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_any_input_size_turns_the_shortcut_off_and_back_on():
    """The 257 px example input takes the 1x1 shortcut in the ASPP (rate 18 >= 17 px): a graph traced with it
    would be wrong at 513 px (the real-size parity test checks that); the switch is restored after errors."""
    with pytest.raises(RuntimeError):
        with any_input_size():
            assert AtrousConv2d.shortcut is False
            raise RuntimeError
    assert AtrousConv2d.shortcut is True
    conv = AtrousConv2d(4, 4, 3, padding=18, dilation=18, bias=False)
    traced = {}
    for name, ctx in (("shortcut", torch.no_grad()), ("full", any_input_size())):
        with ctx:
            traced[name] = torch.jit.trace(conv, torch.randn(1, 4, 17, 17), check_trace=False)
    x = torch.randn(1, 4, 33, 33)
    exact = torch.nn.functional.conv2d(x, conv.weight, padding=18, dilation=18)
    torch.testing.assert_close(traced["full"](x), exact)
    assert not torch.allclose(traced["shortcut"](x), exact)


def test_cost_table_parameter_counts_are_the_designs(tmp_path):
    """Parameters with and without CBAM (the counts themselves: test_models), FLOPs and latency per model."""
    ckpt = save_random_checkpoint(tmp_path / "r18.pth.tar", "resnet18", num_classes=21)
    out = tmp_path / "cost.json"
    p = run(ROOT / "benchmarks" / "cost.py", "--models", "resnet101", "resnet18", "mobilenet", ckpt, "--size", "65",
            "--reps", "1", "--warmup", "0", "--precision", "fp32", "--device", "cpu", "--json", out,
            "--markdown", tmp_path / "cost.md", cwd=tmp_path)
    rows = json.loads(out.read_text())["rows"]
    params = [r["params_M"] for r in rows]
    assert params[0] > params[1] > params[2] and params[3] == params[1]
    assert all(r["params_with_cbam_M"] > r["params_M"] for r in rows)  # the paper's column leaves CBAM out
    assert rows[0]["GFLOPs"] > rows[1]["GFLOPs"] > rows[2]["GFLOPs"] > 0 and rows[3]["GFLOPs"] == rows[1]["GFLOPs"]
    assert all(r["fp32_ms"] > 0 for r in rows)
    assert f"| resnet101 | {params[0]:.2f} |" in p.stdout
    assert (tmp_path / "cost.md").read_text().startswith("| model |")


def test_cost_table_times_the_onnx_export_under_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "cost.json"
    p = run(ROOT / "benchmarks" / "cost.py", "--models", "mobilenet", "--size", "65", "--reps", "2", "--warmup", "1",
            "--precision", "fp32", "--device", "cpu", "--onnxruntime", "--json", out, cwd=tmp_path)
    row = json.loads(out.read_text())["rows"][0]
    assert row["ort_ms"] > 0
    assert "ONNX Runtime fp32 ms" in p.stdout
