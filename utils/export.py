"""Exporting the inference graph (logits at input resolution, no distillation taps, no dropout) and checking the
exported file against PyTorch: ONNX, torch.export (.pt2) or TorchScript, each of any batch and spatial size."""
import warnings

import numpy as np
import torch

from modeling.layers import any_input_size
from utils.outputs import STAMP_FILE

FORMATS = ("onnx", "pt2", "torchscript")


class ExportError(RuntimeError):
    """The export cannot be made or checked; the message says what to do."""


def export_onnx(model, path, opset=18, example_size=(1, 3, 257, 257), stamp=None):
    """ONNX with dynamic batch, height and width (the legacy TorchScript-based exporter: it needs only onnx);
    ``stamp``: the metadata property ``written_by``."""
    try:
        import onnx
    except ImportError:
        raise ExportError("--format onnx needs the onnx package: pip install -r requirements-export.txt") from None
    x = torch.randn(*example_size)
    with any_input_size(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the legacy exporter
        torch.onnx.export(model, (x,), path, input_names=["image"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch", 2: "height", 3: "width"}}, dynamo=False)
    if stamp:
        exported = onnx.load(path)
        exported.metadata_props.add(key="written_by", value=stamp)
        onnx.save(exported, path)


def export_program(model, path, example_size=(2, 3, 257, 257), stamp=None):
    """A ``torch.export`` program (.pt2, what torch 2.x deploys through AOTInductor / ExecuTorch) with dynamic
    batch, height and width (an example batch of 2: a size of 1 would be specialised)."""
    dynamic = {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    with any_input_size(), torch.no_grad():
        program = torch.export.export(model, (torch.randn(*example_size),), dynamic_shapes=(dynamic,))
    torch.export.save(program, path, extra_files={STAMP_FILE: stamp} if stamp else None)


def export_torchscript(model, path, example_size=(1, 3, 257, 257), stamp=None):
    """A traced TorchScript module; sizes are traced as operations, so any input size works.  Deprecated in
    torch 2.14 in favour of torch.export, still what the C++ and mobile TorchScript runtimes load."""
    with any_input_size(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, torch.randn(*example_size), check_trace=False), path,
                       _extra_files={STAMP_FILE: stamp} if stamp else None)


def export(model, fmt, output, outputs, opset=18):
    """Write ``output`` in format ``fmt`` through the output guard ``outputs`` (atomically, stamped)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    mark = outputs.stamp_for(output)
    write = {"onnx": lambda tmp: export_onnx(model, tmp, opset, stamp=mark),
             "pt2": lambda tmp: export_program(model, tmp, stamp=mark),
             "torchscript": lambda tmp: export_torchscript(model, tmp, stamp=mark)}[fmt]
    outputs.write_with(output, write)


def runner(fmt, path):
    """A function numpy batch -> numpy logits that runs the exported file."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("the parity check needs onnxruntime: pip install -r requirements-export.txt "
                              "(or skip it with --no-check)") from None
        try:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as e:  # e.g. an opset newer than this onnxruntime
            raise ExportError(f"onnxruntime cannot run {path}: {str(e).strip().splitlines()[0][:200]} (a lower "
                              f"--opset, or --no-check)") from None
        return lambda x: session.run(None, {"image": x})[0]
    if fmt == "pt2":
        module = torch.export.load(path).module()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(path, map_location="cpu").eval()

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return run


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
