"""Export a trained DeepLab (the inference graph: logits at input resolution, no distillation taps, no
dropout) to ONNX or TorchScript, then check the exported model against PyTorch.

python export.py --checkpoint run/pascal/attnfd-resnet18/model_best.pth.tar --format onnx --output student.onnx
python export.py --checkpoint ... --format torchscript --output student.pt

The exported model takes a float32 NCHW batch normalised with the ImageNet mean/std, of any batch size and
spatial size, and returns float32 logits (N, classes, H, W).  The parity check runs the exported file
(onnxruntime for ONNX, torch.jit.load for TorchScript) and PyTorch on random inputs of ``--check-size``
sizes, prints the max abs error and the share of pixels whose argmax agrees, and exits with 1 when the
error exceeds ``--tolerance``.  ONNX needs the extras: ``pip install -r requirements-export.txt``.
"""
import argparse
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

from modeling.backbone import BACKBONES
from modeling.layers import any_input_size
from predict import load_model
from trainer import ArgumentParser, one_line
from utils.saver import CheckpointError


class ExportError(RuntimeError):
    """The export cannot be made or checked; the message says what to do."""


def get_args_parser():
    p = ArgumentParser(description="Export a DeepLab checkpoint to ONNX or TorchScript with a parity check",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a DeepLab checkpoint (this project's or the published format)")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--output", required=True, help="the file to write (.onnx / .pt)")
    p.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                   help="only for checkpoints that do not record it (default resnet101)")
    p.add_argument("--out-stride", type=int, default=None, choices=[8, 16])
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--check-size", type=int, nargs=3, action="append", metavar=("N", "H", "W"),
                   help="a random input shape for the parity check, repeatable (default: 1 257 257 and 2 200 328)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest max abs logit error accepted")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    return p


def export_onnx(model, path, opset=18, example_size=(1, 3, 257, 257)):
    """ONNX with dynamic batch, height and width (the legacy TorchScript-based exporter: it needs only onnx)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("--format onnx needs the onnx package: pip install -r requirements-export.txt") from None
    x = torch.randn(*example_size)
    with any_input_size(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the legacy exporter
        torch.onnx.export(model, (x,), path, input_names=["image"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch", 2: "height", 3: "width"}}, dynamo=False)


def export_torchscript(model, path, example_size=(1, 3, 257, 257)):
    """A traced TorchScript module; sizes are traced as operations, so any input size works."""
    with any_input_size(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(*example_size), check_trace=False)
        torch.jit.save(traced, path)  # deprecated in favour of torch.export, still the format C++/mobile runtimes load


def runner(fmt, path):
    """A function numpy batch -> numpy logits that runs the exported file."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("the parity check needs onnxruntime: pip install -r requirements-export.txt "
                              "(or skip it with --no-check)") from None
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location="cpu").eval()
    return lambda x: module(torch.from_numpy(x)).detach().numpy()


def parity(model, fmt, path, sizes, seed=0):
    """[(shape, max abs error, argmax agreement)] of the exported model against PyTorch (fp32, CPU)."""
    run = runner(fmt, path)
    g = torch.Generator().manual_seed(seed)
    results = []
    for n, h, w in sizes:
        x = torch.randn(n, 3, h, w, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        out = run(x.numpy())
        if out.shape != ref.shape:
            raise ExportError(f"{path}: the exported model returned {out.shape} for input {tuple(x.shape)}, "
                              f"PyTorch {ref.shape}")
        results.append(((n, 3, h, w), float(np.abs(out - ref).max()), float((out.argmax(1) == ref.argmax(1)).mean())))
    return results


def check_output(output):
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise ExportError(f"--output {output}: folder {folder} does not exist (create it first)")


def export(model, fmt, output, opset=18):
    """Write ``output`` atomically (a temporary file beside it, renamed when complete)."""
    check_output(output)
    folder = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".partial")
    os.close(fd)
    try:
        if fmt == "onnx":
            export_onnx(model, tmp, opset)
        else:
            export_torchscript(model, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(args):
    try:
        check_output(args.output)  # before the (slow) model load
        model = load_model(args.checkpoint, args.backbone, args.out_stride)
        export(model, args.format, args.output, args.opset)
        print(f"Wrote {args.output} ({args.format}, DeepLab({model.backbone_name}), {model.num_classes} classes, "
              f"{os.path.getsize(args.output) / 1e6:.1f} MB)")
        if args.no_check:
            return None
        results = parity(model, args.format, args.output, args.check_size or [(1, 257, 257), (2, 200, 328)])
    except (CheckpointError, ExportError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    for shape, err, agree in results:
        print(f"parity {'x'.join(map(str, shape))}: max abs error {err:.2e}, argmax agreement {100 * agree:.3f}%")
    worst = max(err for _, err, _ in results)
    if worst > args.tolerance:
        print(f"error: max abs error {worst:.2e} exceeds --tolerance {args.tolerance:g}", file=sys.stderr)
        sys.exit(1)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
