"""What AttnFD matches, as pictures (the paper's attention figure):

    python attention_maps.py --student STUDENT.pth.tar --teacher TEACHER.pth.tar --input FILE|DIR --output DIR

For every image, ``DIR/<stem>.png`` shows the image, then for each tap (backbone, ASPP, decoder) the
teacher's and the student's CBAM spatial attention side by side, resized to the image, with one
colour bar per tap (teacher and student share its scale).  Backbones, output stride and whether CBAM
sits in a model's forward path are read from each checkpoint; the teacher's attention (its
checkpoint CBAM or the parameter-free gates) is the one the student was distilled with, as recorded
in the student checkpoint (``--teacher-attention`` overrides it).

``--stats FILE.json`` also measures the maps, averaged over the images: per tap, how much each map varies
within an image (std / mean), the teacher-student correlation, and with ``--labels DIR`` (``<stem>.png``
label maps: 0 background, 255 ignored) how much more attention object pixels get than background ones.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision.transforms.v2.functional as TF  # noqa: E402
from PIL import Image  # noqa: E402

from dataloaders import DatasetError  # noqa: E402
from dataloaders.datasets.base import read_label as read_class_indices  # noqa: E402
from dataloaders.images import InputError, read_rgb  # noqa: E402
from distillation import resolve_teacher_attention  # noqa: E402
from modeling import CBAM, TAPS  # noqa: E402
from utils.cli import ArgumentParser, cli_main, number  # noqa: E402
from utils.device import pick_device  # noqa: E402
from utils.inference import list_images, load_model, to_input  # noqa: E402
from utils.outputs import Outputs  # noqa: E402
from utils.saver import CheckpointError  # noqa: E402


def get_args_parser():
    p = ArgumentParser(description="Teacher and student spatial attention at the AttnFD taps")
    p.add_input("--student", required=True, help="student checkpoint written by train_kd.py")
    p.add_input("--teacher", required=True, help="teacher checkpoint (the one the student was distilled from)")
    p.add_input("--input", kind="images", required=True, help="an image file, a folder of images, or a glob")
    p.add_output("--output", kind="folder", required=True, help="folder for <stem>.png")
    p.add_argument("--size", type=number(int, 0), default=None,
                   help="resize the short side to this (default: the student's recorded --crop-size; 0 keeps it)")
    p.add_argument("--teacher-attention", default=None, choices=["auto", "checkpoint", "parameter-free"],
                   help="default: as recorded in the student checkpoint, else auto")
    p.add_output("--stats", default=None,
                   help="also write the maps' statistics per tap (variation, teacher-student correlation, object / "
                        "background attention with --labels) to this JSON file, and print them")
    p.add_input("--labels", kind="folder", default=None,
                   help="folder of <stem>.png label maps of the input images (0 background, 255 ignored), for --stats")
    p.add_argument("--no-cuda", action="store_true")
    p.add_overwrite()
    return p


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def read_label(folder, image_path, shape):
    """The label map ``folder/<stem>.png`` of ``image_path`` (read as the datasets read theirs), resized (nearest)
    to ``shape`` (H, W)."""
    path = os.path.join(folder, os.path.splitext(os.path.basename(image_path))[0] + ".png")
    if not os.path.isfile(path):
        raise InputError(f"--labels: no label map {path} for {image_path}")
    return np.array(Image.fromarray(read_class_indices(path)).resize((shape[1], shape[0]), Image.NEAREST))


def map_stats(teacher, student, label=None):
    """{tap: statistics} of one image's teacher and student maps (H x W arrays): each map's std / mean, their
    correlation, and with ``label`` each map's mean on object pixels over its mean on background ones."""
    stats = {}
    for tap in TAPS:
        t, s = teacher[tap].astype(np.float64), student[tap].astype(np.float64)
        row = {"teacher_variation": t.std() / t.mean(), "student_variation": s.std() / s.mean(),
               "correlation": np.corrcoef(t.ravel(), s.ravel())[0, 1] if t.std() > 0 and s.std() > 0 else np.nan}
        if label is not None:
            objects, background = (label > 0) & (label < 255), label == 0
            for who, m in (("teacher", t), ("student", s)):
                row[f"{who}_object_lift"] = m[objects].mean() / m[background].mean() \
                    if objects.any() and background.any() else np.nan
        stats[tap] = row
    return stats


def mean_stats(per_image):
    """Per tap and statistic, the mean over images (those where it is defined), as plain floats."""
    return {tap: {k: float(np.nanmean([s[tap][k] for s in per_image])) for k in per_image[0][tap]} for tap in TAPS}


def load_image(path, size):
    """(the picture to show, H x W x 3 uint8; the network input), the short side resized to ``size`` (0: kept)."""
    image = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)
    if size:
        image = TF.resize(image, size, antialias=True)
    picture = image.permute(1, 2, 0).numpy()
    return picture, to_input([picture])


@torch.no_grad()
def spatial_maps(model, attention, x):
    """{tap: H x W spatial attention of ``attention[tap]`` on the model's tap, resized to the input}."""
    taps = model.forward_features(x, logits=False).taps
    return {tap: F.interpolate(attention[tap].spatial_attention(taps[tap]), size=x.shape[2:], mode="bilinear",
                               align_corners=True)[0, 0].cpu().numpy() for tap in TAPS}


def draw(outputs, path, image, teacher, student, names):
    fig, axes = plt.subplots(1, 1 + 2 * len(TAPS), figsize=(2.2 * (1 + 2 * len(TAPS)) + 1.5, 2.8))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for i, tap in enumerate(TAPS):
        lo = min(teacher[tap].min(), student[tap].min())
        hi = max(teacher[tap].max(), student[tap].max(), lo + 1e-6)
        pair = axes[1 + 2 * i: 3 + 2 * i]
        for ax, maps, who in zip(pair, (teacher, student), names):
            im = ax.imshow(maps[tap], cmap="jet", vmin=lo, vmax=hi)
            ax.set_title(f"{tap}\n{who}", fontsize=8)
        fig.colorbar(im, ax=list(pair), fraction=0.046, pad=0.02)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    outputs.write_figure(path, fig, dpi=110, bbox_inches="tight")


def run(args):
    device = pick_device(args.no_cuda)
    images = list_images(args.input)
    if args.labels:
        if not args.stats:
            raise InputError("--labels is read only for --stats: add --stats FILE.json")
        if not os.path.isdir(args.labels):
            raise InputError(f"--labels {args.labels} is not a folder")
    outputs = Outputs.from_args(get_args_parser(), args, "attention_maps.py")
    outputs.writes_folder("--output", args.output, [stem(p) + ".png" for p in images]).check()
    student, s_args, _ = load_model(args.student, "--student")
    teacher, t_args, missing = load_model(args.teacher, "--teacher")
    if not s_args.get("kd", False):
        print(f"note: {args.student} was not written by train_kd.py; its CBAM was never trained by distillation")
    requested = args.teacher_attention or s_args.get("teacher_attention") or "auto"
    try:
        mode, why = resolve_teacher_attention(requested, missing, bool(t_args.get("attention_in_path", False)))
    except ValueError as e:
        raise CheckpointError(f"--teacher {args.teacher} {e}") from None
    if args.teacher_attention is None and s_args.get("teacher_attention"):
        why = "the one the student was distilled with, recorded in its checkpoint"
    t_attention = teacher.attention() if mode == "checkpoint" else \
        {tap: CBAM(c, learned=False) for tap, c in teacher.tap_channels.items()}
    print(f"teacher attention: {mode} ({why})")
    student.to(device)
    teacher.to(device)
    size = s_args.get("crop_size", 513) if args.size is None else args.size
    names = (f"teacher ({teacher.backbone_name})", f"student ({student.backbone_name})")
    written, per_image = [], []
    for path in images:
        picture, x = load_image(path, size)
        x = x.to(device)
        out = os.path.join(args.output, stem(path) + ".png")
        t_maps, s_maps = spatial_maps(teacher, t_attention, x), spatial_maps(student, student.attention(), x)
        draw(outputs, out, picture, t_maps, s_maps, names)
        written.append(out)
        if args.stats:
            label = read_label(args.labels, path, x.shape[2:]) if args.labels else None
            per_image.append(map_stats(t_maps, s_maps, label))
    print(f"Wrote {len(written)} picture(s) to {args.output}")
    if args.stats:
        stats = {"student": args.student, "teacher": args.teacher, "teacher_attention": mode, "images": len(images),
                 "taps": mean_stats(per_image)}
        for tap, row in stats["taps"].items():
            print(f"{tap}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        outputs.write_json(args.stats, stats)
    return written


main = cli_main(run, CheckpointError, InputError, DatasetError)  # one-line errors, exit status 2


if __name__ == "__main__":
    main(get_args_parser().parse_args())
