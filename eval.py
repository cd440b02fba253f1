"""Evaluate a checkpoint on a split: mIoU, accuracies, per-class IoU; optional flip / multi-scale testing, JSON
output and predictions (palette PNGs) + overlays.

python eval.py --checkpoint run/pascal/deeplab-resnet101/model_best.pth.tar --dataset pascal --flip
"""
import os

from torch.utils.data import DataLoader

from dataloaders import DATASETS, build_dataset, class_names
from dataloaders.images import InputError
from dataloaders.utils import denormalize, get_palette
from modeling.backbone import BACKBONES
from utils.cli import ArgumentParser, cli_main, number
from utils.device import Precision, pick_device
from utils.inference import evaluate, load_model, mask_image, overlay_image
from utils.outputs import Outputs
from utils.saver import CheckpointError

VIS = ("pred", "gt", "overlay")  # the pictures --save-vis writes per image


def get_args_parser():
    p = ArgumentParser(description="Evaluate a DeepLabV3+ checkpoint")
    p.add_input("--checkpoint", required=True, help="e.g. run/<dataset>/<checkname>/model_best.pth.tar")
    p.add_input("--dataset", kind="dataset", default="pascal", choices=list(DATASETS))
    p.add_argument("--split", default="val")
    p.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                   help="only needed when the checkpoint does not record it (default resnet101)")
    p.add_argument("--out-stride", type=int, default=None, choices=[8, 16])
    p.add_argument("--crop-size", type=number(int, 1), default=513, help="short side in resize mode")
    p.add_argument("--full-res", action="store_true", help="metrics at original resolution (no resize)")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--scales", type=number(float, 0, low_open=True), nargs="+", default=[1.0],
                   help="multi-scale testing, e.g. 0.75 1 1.25")
    p.add_output("--json", default=None, help="write the metrics to this JSON file")
    p.add_output("--save-vis", kind="folder", default=None, metavar="DIR",
                 help="write predictions, ground truth and overlays (<stem>_pred.png, _gt.png, _overlay.png)")
    p.add_argument("--max-vis", type=number(int, 0), default=20, help="at most this many images for --save-vis")
    p.add_argument("--workers", type=number(int, 0), default=2)
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (as train.py --amp); metrics in fp32")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_overwrite()
    return p


def vis_stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def run(args):
    dataset = build_dataset(args.dataset, args.split, args.crop_size, args.crop_size, full_res=args.full_res)
    outputs = Outputs.from_args(get_args_parser(), args, "eval.py")
    outputs.reads(f"--dataset {args.dataset}", *[f for pair in dataset.pairs for f in pair])
    outputs.writes_folder("--save-vis", args.save_vis, [f"{vis_stem(image)}_{kind}.png" for image, _ in
                                                        dataset.pairs[:args.max_vis] for kind in VIS])
    outputs.check()
    model, _, _ = load_model(args.checkpoint, "--checkpoint", args.backbone, args.out_stride, dataset.num_classes)
    precision = Precision(pick_device(args.no_cuda), args.amp, channels_last=args.channels_last)
    precision.prepare(model).eval()
    palette, names = get_palette(args.dataset), class_names(args.dataset)

    def save_vis(i, image, label, pred):
        if args.save_vis and i < args.max_vis:
            stem = os.path.join(args.save_vis, vis_stem(dataset.pairs[i][0]))
            rgb = (denormalize(image[:1].float())[0].permute(1, 2, 0).cpu().numpy() * 255).astype("uint8")
            outputs.write_png(f"{stem}_pred.png", mask_image(pred[0].cpu().numpy(), palette))
            outputs.write_png(f"{stem}_gt.png", mask_image(label[0].cpu().numpy(), palette))
            outputs.write_png(f"{stem}_overlay.png", overlay_image(rgb, pred[0].cpu().numpy(), palette))

    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.workers)
    r = evaluate(model, loader, dataset.num_classes, precision, args.scales, args.flip,
                 desc=f"Eval {args.dataset}:{args.split}", on_batch=save_vis).metrics
    result = {"checkpoint": args.checkpoint, "dataset": args.dataset, "split": args.split,
              "mode": "full-res" if args.full_res else f"short side {args.crop_size}", "flip": args.flip,
              "scales": args.scales, "images": len(dataset), "mIoU": r["mIoU"], "Acc": r["Acc"],
              "Acc_class": r["Acc_class"], "fwIoU": r["fwIoU"], "IoU": dict(zip(names, r["IoU"]))}
    width = max(len(n) for n in names)
    print(f"{'class':<{width}}  IoU")
    for n, v in result["IoU"].items():
        print(f"{n:<{width}}  {'  n/a' if v is None else f'{100 * v:5.2f}'}")
    print(f"mIoU {100 * r['mIoU']:.2f}  Acc {100 * r['Acc']:.2f}  Acc_class {100 * r['Acc_class']:.2f}  "
          f"fwIoU {100 * r['fwIoU']:.2f}  ({len(dataset)} images, {result['mode']})")
    if args.json:
        outputs.write_json(args.json, result)
    return result


main = cli_main(run, InputError, CheckpointError)  # one-line errors, exit status 2


if __name__ == "__main__":
    main(get_args_parser().parse_args())
