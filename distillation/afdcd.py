"""Af-DCD (Fan et al., NeurIPS 2023, "Augmentation-free Dense Contrastive Knowledge Distillation for Efficient
Semantic Segmentation"; OSVAI/Af-DCD, ``losses/ocmgd.py``, ``train_ocmgd.py``, ``train_scripts/``).

On the backbone's last stage (``c4``: the backbone tap after its ReLU, as a ResNet's layer4 returns it; MobileNetV2's
has none), the student feature goes through
an align conv (1x1 to the teacher's channels, with bias), a random mask (each position zeroed with probability
0.75, shared over channels) and a projector (3x3 conv, ReLU, 3x3 conv, biases, the teacher's width); then

* feature mimicking: sum((projected - teacher)^2) / B;
* omni-contrastive: both maps max-pooled (kernel 4 at Af-DCD's stride 8: here kernel = 32 / stride, the same
  pooled grid), cut into 4 x 4 patches and the channels into 16 groups; within a patch every (position, group)
  vector of the student is an anchor whose positive is the teacher's vector at the same position and group,
  and whose negatives are the teacher's vectors of the other 15 groups at any of the 16 positions; similarity
  = -L1 distance, CE at T 0.07 summed, divided by the pooled H x W and by B;
* KD on the logits at T 1.

Weights (OSVAI/Af-DCD @ 5b086a7): KD 1; mimicking / contrastive as its training scripts set them per dataset:
Pascal VOC 1e-6 / 0.005 (``train_scripts/voc/deeplabv3_res18.sh``), Cityscapes 2e-6 / 0.005
(``train_scripts/cityscape/deeplabv3_r101_deeplabv3_r18_ocmgd.sh``; that script also passes
``--rand_mask False --enhance_projector True``, flags its argparse does not know, so it cannot run as written),
CamVid 8e-6 / 0.01 (``train_scripts/camvid/deeplabv3_res18.sh``; on CamVid ``ocmgd.py`` does not max-pool the maps
before the contrastive term, and here neither); any other dataset (here ``synthetic``) takes ``train_ocmgd.py``'s
argparse defaults, 4e-5 / 0.001.  ``--afdcd_mimic`` / ``--afdcd_contrast`` override them.  Its DeepLabV3 gives
stride-8 logits to KD; here KD reads the student's logits at the input size (the same pixel mean).
Adapted: a pooled map that does not divide into 4 x 4 patches
is cropped to one that does (Af-DCD's maps always did), and on maps too small for them (crops under about 256 px)
the pooling, then the patch, shrinks; the align conv exists also for equal channel counts (the
reference's forward would fail there).  Its modules' gradients are clipped to norm 15 before each step, as its
training script does.
Under torch.distributed both sums run over the global batch; each rank draws its own masks (as dropout).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.device import fp32

from .base import Hyper, Method, global_mean, register_method
from .kd import kd_loss

GROUPS, PATCH, TAU = 16, 4, 0.07
# (mimic, contrast) by dataset, from the authors' training scripts; others: train_ocmgd.py's argparse defaults
SCRIPT_WEIGHTS = {"pascal": (1e-6, 0.005), "cityscapes": (2e-6, 0.005), "camvid": (8e-6, 0.01)}
ARGPARSE_WEIGHTS = (4e-5, 0.001)


def mimic_loss(projected, t):
    """sum((projected - t)^2) / B over the global batch."""
    return global_mean((fp32(projected) - fp32(t)).pow(2).sum(), t)


def _vectors(x, patch):
    """(B, C, H, W), H and W multiples of ``patch`` -> (B x patches, patch^2 x GROUPS, C / GROUPS): index =
    position x GROUPS + group."""
    b, c, h, w = x.shape
    x = x.view(b, GROUPS, c // GROUPS, h // patch, patch, w // patch, patch)
    x = x.permute(0, 3, 5, 4, 6, 1, 2)  # B, patch row, patch col, row in patch, col in patch, group, dims
    return x.reshape(-1, patch * patch * GROUPS, c // GROUPS)


def other_groups(n, device):
    """(n, n - n / GROUPS): for each of the n (position, group) vectors of a patch, the indices of the vectors of the
    other groups, in order (index = position x GROUPS + group); arithmetic, so no host sync as a boolean mask has."""
    j = torch.arange(n - n // GROUPS, device=device)
    position, other = j // (GROUPS - 1), j % (GROUPS - 1)
    group = torch.arange(n, device=device)[:, None] % GROUPS
    return position * GROUPS + other + (other >= group)


def contrastive_loss(projected, t, pool=4, temperature=TAU, patch=PATCH):
    """Af-DCD's omni-contrastive term of the projected student map and the teacher map (same shape).  On maps too
    small for ``pool`` and ``patch`` (small crops) the pooling shrinks first, then the patch."""
    h, w = t.shape[2:]
    while pool > 1 and min(h, w) // pool < patch:
        pool -= 1
    with torch.autocast(t.device.type, enabled=False):
        s, t = (F.max_pool2d(fp32(x), pool) if pool > 1 else fp32(x) for x in (projected, t))
        h, w = s.shape[2], s.shape[3]
        patch = min(patch, h, w)
        s, t = s[:, :, :h - h % patch, :w - w % patch], t[:, :, :h - h % patch, :w - w % patch]
        sim = -torch.cdist(_vectors(s, patch), _vectors(t.detach(), patch), p=1)  # (patches, n, n) student x teacher
        positive = sim.diagonal(dim1=1, dim2=2)[..., None]
        negatives = sim.gather(2, other_groups(sim.shape[1], sim.device).expand(sim.shape[0], -1, -1))
        logits = torch.cat([positive, negatives], 2) / temperature  # the positive is class 0
        ce = (torch.logsumexp(logits, 2) - logits[..., 0]).sum()
    return global_mean(ce / (h * w), t)


@register_method
class AfDCD(Method):
    name, title = "afdcd", "Af-DCD"
    hyper = (Hyper("weight", "afdcd_lambda", 0.0, "Af-DCD: scales all its terms (paper: 1); 0 = off", paper=1.0,
                   low=0),
             Hyper("kd", "afdcd_kd", 1.0, "Af-DCD KD term weight (paper: 1)", low=0, term=True),
             Hyper("contrast", "afdcd_contrast", None, "Af-DCD omni-contrastive weight (default: its scripts' 0.005 on "
                   "pascal and cityscapes, 0.01 on camvid; its code's default 0.001 otherwise)", low=0, term=True),
             Hyper("mimic", "afdcd_mimic", None, "Af-DCD masked feature mimicking weight (default: its scripts' 1e-6 "
                   "on pascal, 2e-6 on cityscapes, 8e-6 on camvid; its code's default 4e-5 otherwise)", low=0,
                   term=True),
             Hyper("mask_ratio", "afdcd_mask_ratio", 0.75, "Af-DCD share of positions masked (paper: 0.75)", low=0))
    teacher_needs = frozenset({"logits"})
    clip_grad_norm = 15.0  # train_ocmgd.py: clip_grad_norm_(criterion's parameters, max_norm=15)

    @classmethod
    def check(cls, values, facts):
        if not 0 <= values["mask_ratio"] < 1:
            return f"--afdcd_mask_ratio {values['mask_ratio']}: give a share in [0, 1)"
        return super().check(values, facts)

    @classmethod
    def build(cls, student, teacher, values, missing_attention=(), dataset=None):
        mimic, contrast = SCRIPT_WEIGHTS.get(dataset, ARGPARSE_WEIGHTS)
        values = {**values, "mimic": mimic if values.get("mimic") is None else values["mimic"],
                  "contrast": contrast if values.get("contrast") is None else values["contrast"]}
        method = cls(student, teacher, **values)
        method.pooled = dataset != "camvid"  # ocmgd.py's camvid branch: no max-pool, the map cut to patches
        return method

    def __init__(self, student, teacher, **values):
        super().__init__(student, teacher, **values)
        self.mimic = ARGPARSE_WEIGHTS[0] if self.mimic is None else self.mimic
        self.contrast = ARGPARSE_WEIGHTS[1] if self.contrast is None else self.contrast
        s_ch, t_ch = student.tap_channels["backbone"], teacher.tap_channels["backbone"]
        if t_ch % GROUPS:
            raise ValueError(f"Af-DCD splits the teacher's {t_ch} backbone channels into {GROUPS} groups")
        self.align = nn.Conv2d(s_ch, t_ch, 1)
        self.projector = nn.Sequential(nn.Conv2d(t_ch, t_ch, 3, padding=1), nn.ReLU(inplace=True),
                                       nn.Conv2d(t_ch, t_ch, 3, padding=1))
        self.student_relu, self.teacher_relu = student.backbone.stage_relu, teacher.backbone.stage_relu
        self.pooled = True

    def notes(self):
        return [f"Af-DCD: lambda {self.weight} x (KD {self.kd}, contrastive {self.contrast}, mimicking {self.mimic}); "
                f"mask ratio {self.mask_ratio}, {GROUPS} channel groups, {PATCH}x{PATCH} patches, T {TAU}"
                + ("" if self.pooled else "; contrastive map not pooled (its camvid setting)")]

    def project(self, s):
        """The student's backbone tap, aligned, masked (in training) and projected."""
        s = self.align(s)
        if self.training and self.mask_ratio > 0:
            keep = torch.rand(s.shape[0], 1, *s.shape[2:], device=s.device) > self.mask_ratio
            s = s * keep.to(s.dtype)
        return self.projector(s)

    def forward(self, student, teacher, warmup=False):
        s, t = student.taps["backbone"], teacher.taps["backbone"]
        s, t = F.relu(s) if self.student_relu else s, F.relu(t) if self.teacher_relu else t  # c4 as the nets give it
        projected = self.project(s)
        pool = max(1, round(32 * t.shape[2] / student.logits.shape[2])) if self.pooled else 1  # 4 at stride 8
        terms = {"afdcd/kd": self.kd * kd_loss(student.logits, teacher.logits),
                 "afdcd/mimic": self.mimic * mimic_loss(projected, t),
                 "afdcd/contrast": self.contrast * contrastive_loss(projected, t, pool)}
        return {k: self.weight * v for k, v in terms.items()}
