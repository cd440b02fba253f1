"""AttnFD (Mansourian et al., arXiv 2403.05451): attention-guided feature distillation.

At three taps (backbone layer4 pre-ReLU, ASPP output, decoder output) CBAM refines teacher and
student features; a connector (1x1 conv + BN) maps the student's refined tap to the teacher's
channels; the loss per tap is sum((s/||s|| - t/||t||)^2) / batch, and the total is
``attn_lambda`` x the sum over taps.  ||.|| is the L2 norm of the whole batch tensor, as in the
authors' code that produced the reported numbers; ``normalization='channel'`` normalises each
(sample, channel) map instead, as the paper's text describes.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from modeling import CBAM, TAPS
from utils.device import fp32
from utils.distributed import global_batch, sum_over_ranks, world_size

from .base import Hyper, Method, register_method


def attnfd_loss(s, t, normalization="global"):
    """sum((s/||s|| - t/||t||)^2) / B for (B, C, H, W) tensors, computed in fp32 (also under autocast).

    Under torch.distributed, ||.|| is the norm of the global batch tensor, the sum runs over the global
    batch and B is the global batch size, so every rank holds the single-process loss (``sum_over_ranks``
    is differentiable).
    """
    s, t = fp32(s), fp32(t)
    if normalization == "global":
        s, t = s / _global_norm(s), t / _global_norm(t)
    elif normalization == "channel":
        s, t = F.normalize(s.flatten(2), dim=2), F.normalize(t.flatten(2), dim=2)
    else:
        raise ValueError(f"normalization must be 'global' or 'channel', got {normalization!r}")
    return sum_over_ranks((s - t).pow(2).sum()) / global_batch(s)


def _global_norm(x):
    n = torch.norm(x, p=2)
    return n if world_size() == 1 else sum_over_ranks(n * n).sqrt()


def resolve_teacher_attention(mode, missing, in_path=False):
    """``--teacher-attention auto|checkpoint|parameter-free`` -> (mode, reason) for a teacher checkpoint
    that lacks the CBAM keys ``missing`` and was (``in_path``) or was not trained with CBAM in its path."""
    if mode == "auto":
        if missing:
            return "parameter-free", "the checkpoint has no CBAM weights (pytorch-deeplab-xception format)"
        if in_path:
            return "checkpoint", "the teacher was trained with CBAM in its forward path"
        return "checkpoint", "the checkpoint carries CBAM weights; as in the reference, they were never trained by " \
                             "its forward pass"
    if mode == "checkpoint" and missing:
        raise ValueError(f"has no CBAM weights ({len(missing)} missing); "
                         "use --teacher-attention parameter-free or auto")
    if mode not in ("checkpoint", "parameter-free"):
        raise ValueError(f"--teacher-attention must be auto, checkpoint or parameter-free, got {mode!r}")
    return mode, "requested with --teacher-attention"


def build_connector(s_channels, t_channels):
    """conv1x1 (no bias) + BN; conv ~ N(0, sqrt(2 / (k*k*out))), BN weight 1, bias 0 (reference)."""
    conv = nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0, math.sqrt(2.0 / t_channels))
    bn = nn.BatchNorm2d(t_channels)
    return nn.Sequential(conv, bn)


@register_method
class AttnFD(Method):
    """Mansourian et al., arXiv 2403.05451; the reference's defaults: lambda 2, global norm, connectors
    warmed up alone in epoch 0 and frozen afterwards, teacher in train mode."""
    name, title = "attnfd", "AttnFD"
    hyper = (Hyper("weight", "attn_lambda", 2.0, "AttnFD weight (paper: 2); 0 turns AttnFD off", low=0),
             Hyper("teacher_attention", "teacher-attention", "auto", "AttnFD teacher CBAM: the checkpoint's weights "
                   "or parameter-free pooling; auto picks the checkpoint's when it has them, as the reference",
                   choices=("auto", "checkpoint", "parameter-free")),
             Hyper("normalization", "attn-norm", "global", "AttnFD normalisation: global (the reference's code) or "
                   "channel (the paper's text)", choices=("global", "channel")))
    warmup, train_with_student, teacher_train_mode, divide_by_batch = True, False, True, False

    @classmethod
    def build(cls, student, teacher, values, missing_attention=(), dataset=None):
        """Resolves ``teacher_attention`` for the teacher checkpoint (``auto``: the checkpoint's CBAM when present)."""
        try:
            mode, why = resolve_teacher_attention(values["teacher_attention"], missing_attention,
                                                  teacher.attention_in_path)
        except ValueError as e:
            raise ValueError(f"--teacher-attention {values['teacher_attention']}: the teacher checkpoint {e}") \
                from None
        method = cls(student, teacher, **{**values, "teacher_attention": mode})
        method.why = why
        return method

    def __init__(self, student, teacher, **values):
        super().__init__(student, teacher, **values)
        self.why = "requested"
        if self.teacher_attention == "auto":  # a teacher built here, not read from a checkpoint
            self.teacher_attention, self.why = resolve_teacher_attention("auto", (), teacher.attention_in_path)
        s_ch, t_ch = student.tap_channels, teacher.tap_channels
        self.connectors = nn.ModuleDict({tap: build_connector(s_ch[tap], t_ch[tap]) for tap in TAPS})
        self.student_cbam = student.attention()  # plain dicts: the modules live in the nets
        if self.teacher_attention == "checkpoint":
            self.teacher_cbam = teacher.attention()
        elif self.teacher_attention == "parameter-free":
            self.teacher_cbam = nn.ModuleDict({tap: CBAM(t_ch[tap], learned=False) for tap in TAPS})
        else:
            raise ValueError(f"teacher_attention must be 'checkpoint' or 'parameter-free', got "
                             f"{self.teacher_attention!r}")

    def notes(self):
        return [f"AttnFD: lambda {self.weight}, {self.normalization} norm; teacher attention: "
                f"{self.teacher_attention} ({self.why})"]

    def forward(self, student, teacher, warmup=False):
        """{'attnfd/<tap>': weight * loss at that tap}; in warm-up the student's CBAM runs without autograd too,
        so only the connectors learn."""
        with torch.no_grad():
            t_att = {tap: self.teacher_cbam[tap](x) for tap, x in teacher.taps.items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not warmup):
            s_att = {tap: self.student_cbam[tap](student.taps[tap]) for tap in TAPS}
        return {f"attnfd/{tap}": self.weight * attnfd_loss(self.connectors[tap](s_att[tap]), t_att[tap],
                                                           self.normalization) for tap in TAPS}
