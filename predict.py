"""Apply a trained DeepLab (teacher or student) to your own images: a palette PNG of the labels and an
overlay per image.

python predict.py --checkpoint run/pascal/attnfd-resnet18/model_best.pth.tar --input photos/ --output preds/

Each image is inferred at its own resolution after ImageNet normalisation (no resize); images of the
same size are batched on the device. Writes ``<output>/<stem>.png`` (label ids, palette PNG, the
image's size) and ``<output>/<stem>_overlay.png``. The architecture comes from the checkpoint's
recorded args; ``--backbone`` / ``--out-stride`` fill in for checkpoints that record none.
"""
import os

from tqdm import tqdm

from dataloaders import DATASETS
from dataloaders.images import InputError, read_rgb
from dataloaders.utils import get_palette
from modeling.backbone import BACKBONES
from utils.cli import ArgumentParser, cli_main, number
from utils.device import Precision, pick_device
from utils.inference import list_images, load_model, mask_image, overlay_image, predict, to_input
from utils.outputs import Outputs
from utils.saver import CheckpointError


def get_args_parser():
    p = ArgumentParser(description="Predict segmentation masks for images")
    p.add_input("--checkpoint", required=True, help="a DeepLab checkpoint (this project's or the published format)")
    p.add_input("--input", kind="images", required=True,
                help="an image, a folder of images, or a glob such as 'photos/*.jpg'")
    p.add_output("--output", kind="folder", required=True, help="folder for <stem>.png and <stem>_overlay.png")
    p.add_argument("--dataset", default="pascal", choices=list(DATASETS), help="palette of the label PNGs")
    p.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                   help="only for checkpoints that do not record it (default resnet101)")
    p.add_argument("--out-stride", type=int, default=None, choices=[8, 16])
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--scales", type=number(float, 0, low_open=True), nargs="+", default=[1.0],
                   help="multi-scale, e.g. 0.75 1 1.25")
    p.add_argument("--batch-size", type=number(int, 1), default=4, help="images of the same size per forward pass")
    p.add_argument("--alpha", type=number(float, 0, 1), default=0.5, help="weight of the colours in the overlay")
    p.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (as train.py --amp)")
    p.add_argument("--no-cuda", action="store_true")
    p.add_overwrite()
    return p


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def run(args):
    paths = list_images(args.input)
    outputs = Outputs.from_args(get_args_parser(), args, "predict.py")
    outputs.writes_folder("--output", args.output, [name for p in paths for name in (f"{stem(p)}.png",
                                                                                    f"{stem(p)}_overlay.png")])
    outputs.check()
    images = {p: read_rgb(p) for p in paths}  # every image is checked before anything is written
    model, _, _ = load_model(args.checkpoint, "--checkpoint", args.backbone, args.out_stride)
    precision = Precision(pick_device(args.no_cuda), args.amp)
    precision.prepare(model).eval()
    palette = get_palette(args.dataset)
    by_size = {}
    for p, rgb in images.items():
        by_size.setdefault(rgb.shape[:2], []).append(p)
    written = []
    with tqdm(total=len(paths), desc="Predict") as bar:
        for same in by_size.values():
            for k in range(0, len(same), args.batch_size):
                chunk = same[k:k + args.batch_size]
                x = precision.images(to_input([images[p] for p in chunk]))
                labels = predict(model, x, args.scales, args.flip, precision).argmax(1).cpu().numpy()
                for p, label in zip(chunk, labels):
                    out = os.path.join(args.output, stem(p))
                    outputs.write_png(f"{out}.png", mask_image(label, palette))
                    outputs.write_png(f"{out}_overlay.png", overlay_image(images[p], label, palette, args.alpha))
                    written.append(stem(p))
                bar.update(len(chunk))
    print(f"Wrote {2 * len(written)} files for {len(written)} images to {args.output}")
    return written


main = cli_main(run, InputError, CheckpointError)  # one-line errors, exit status 2


if __name__ == "__main__":
    main(get_args_parser().parse_args())
