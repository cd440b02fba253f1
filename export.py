"""Export a trained DeepLab (the inference graph: logits at input resolution, no distillation taps, no
dropout) to ONNX, torch.export (.pt2) or TorchScript, then check the exported model against PyTorch.

python export.py --checkpoint run/pascal/attnfd-resnet18/model_best.pth.tar --format onnx --output student.onnx
python export.py --checkpoint ... --format pt2 --output student.pt2
python export.py --checkpoint ... --format torchscript --output student.pt

The exported model takes a float32 NCHW batch normalised with the ImageNet mean/std, of any batch size and
spatial size, and returns float32 logits (N, classes, H, W).  The parity check runs the exported file
(onnxruntime for ONNX, torch.export.load / torch.jit.load otherwise) and PyTorch on random inputs of
``--check-size`` sizes, prints the max abs error and the share of pixels whose argmax agrees, and exits with 1
when the error exceeds ``--tolerance``.  ONNX needs the extras: ``pip install -r requirements-export.txt``.
"""
import os
import sys

from modeling.backbone import BACKBONES
from utils.cli import ArgumentParser, UsageError, number, one_line_errors
from utils.export import FORMATS, ExportError, export, parity
from utils.inference import load_model
from utils.outputs import Outputs
from utils.saver import CheckpointError

MIN_SIZE = 32  # the deepest features of a DeepLab at output stride 16 are at least 2 x 2


def get_args_parser():
    p = ArgumentParser(description="Export a DeepLab checkpoint to ONNX, torch.export or TorchScript with a parity "
                                   "check")
    p.add_input("--checkpoint", required=True, help="a DeepLab checkpoint (this project's or the published format)")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx, pt2 (torch.export) or torchscript")
    p.add_output("--output", required=True, help="the file to write (.onnx / .pt2 / .pt)")
    p.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                   help="only for checkpoints that do not record it (default resnet101)")
    p.add_argument("--out-stride", type=int, default=None, choices=[8, 16])
    p.add_argument("--opset", type=number(int, 11, 23), default=18,
                   help="ONNX opset (11: the first with bilinear align_corners resizing; 23: torch 2.14's newest)")
    p.add_argument("--check-size", type=number(int, 1), nargs=3, action="append", metavar=("N", "H", "W"),
                   help="a random input shape for the parity check, repeatable (default: 1 257 257 and 2 200 328)")
    p.add_argument("--tolerance", type=number(float, 0), default=1e-4, help="largest max abs logit error accepted")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_overwrite()
    return p


def main(args):
    with one_line_errors(CheckpointError, ExportError):
        small = [s for s in args.check_size or [] if min(s[1:]) < MIN_SIZE]
        if small:
            raise UsageError(f"--check-size {' '.join(map(str, small[0]))}: height and width must be at least "
                             f"{MIN_SIZE} (2 x the largest output stride)")
        outputs = Outputs.from_args(get_args_parser(), args, "export.py").check()  # before the model load
        model, _, _ = load_model(args.checkpoint, "--checkpoint", args.backbone, args.out_stride)
        export(model, args.format, args.output, outputs, args.opset)
        print(f"Wrote {args.output} ({args.format}, DeepLab({model.backbone_name}), {model.num_classes} classes, "
              f"{os.path.getsize(args.output) / 1e6:.1f} MB)")
        if args.no_check:
            return None
        results = parity(model, args.format, args.output, args.check_size or [(1, 257, 257), (2, 200, 328)])
    for shape, err, agree in results:
        print(f"parity {'x'.join(map(str, shape))}: max abs error {err:.2e}, argmax agreement {100 * agree:.3f}%")
    worst = max(err for _, err, _ in results)
    if worst > args.tolerance:
        print(f"error: max abs error {worst:.2e} exceeds --tolerance {args.tolerance:g}", file=sys.stderr)
        sys.exit(1)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
