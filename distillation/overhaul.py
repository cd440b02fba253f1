"""Overhaul (Heo et al., ICCV 2019; clovaai/overhaul-distillation, the ancestor of this codebase).

Features before ReLU: the four backbone stages, the ASPP output and the decoder's second conv
(``Features.stages + Features.heads``), the student's through a connector (1x1 conv + BN) to the
teacher's channels.  The teacher's target is clipped below at a per-channel margin, the expectation of
its negative responses from the BN before the ReLU (mean = BN bias, std = |BN weight|); the partial L2
skips positions where both target and student are below it.  Per feature the sum is divided by the
reference's dividers (8, 4, 2, 1, 1, 16); the total is ``overhaul_lambda`` x sum / batch size
(segmentation script: 1e-5, against the same batch-averaged CE as here, so no further division).
As there, the connectors train alone in epoch 0 (``init_optimizer``) and with the student afterwards,
at 10x the base lr, and the teacher runs in train mode.
"""
import math

import torch
import torch.nn as nn

from utils.device import fp32

from .attnfd import build_connector
from .base import Hyper, Method, global_mean, register_method, resize_to

DIVIDERS = (8, 4, 2, 1, 1, 16)


def margin_from_bn(bn):
    """Per channel E[x | x < 0] for x ~ N(bias, |weight|) (or -3 std where P(x < 0) <= 0.001)."""
    from scipy.stats import norm  # here, not at the top: importing scipy.stats costs every CLI 0.7 s

    margins = []
    for s, m in zip(bn.weight.detach().abs().tolist(), bn.bias.detach().tolist()):
        if s > 0 and norm.cdf(-m / s) > 0.001:
            margins.append(-s * math.exp(-(m / s) ** 2 / 2) / math.sqrt(2 * math.pi) / norm.cdf(-m / s) + m)
        else:
            margins.append(-3 * s)
    return torch.tensor(margins, dtype=torch.float32).view(1, -1, 1, 1)


def overhaul_partial_l2(source, target, margin):
    """sum of (source - max(target, margin))^2 where source > clipped target or target > 0."""
    source = fp32(source)
    target = torch.max(fp32(target), margin)
    mask = (source > target) | (target > 0)
    return ((source - target).pow(2) * mask).sum()


def overhaul_loss(sources, targets, margins, dividers=DIVIDERS):
    """sum over features of partial L2 / divider, divided by the global batch size (sums over ranks)."""
    total = sum(overhaul_partial_l2(resize_to(s, t), t, m) / d
                for s, t, m, d in zip(sources, targets, margins, dividers))
    return global_mean(total, sources[0])


@register_method
class Overhaul(Method):
    name, title = "overhaul", "Overhaul"
    hyper = (Hyper("weight", "overhaul_lambda", 0.0, "Overhaul weight on sum / batch (its segmentation script: "
                   "1e-5); 0 = off", paper=1e-5, low=0),)
    teacher_needs = student_needs = frozenset({"stages"})
    warmup, train_with_student, lr_mult, teacher_train_mode, divide_by_batch = True, True, 10.0, True, False

    def __init__(self, student, teacher, **values):
        super().__init__(student, teacher, **values)
        self.connectors = nn.ModuleList([build_connector(s, t) for s, t in
                                         zip(student.pre_relu_channels, teacher.pre_relu_channels)])
        for i, bn in enumerate(teacher.bns_before_relu()):
            self.register_buffer(f"margin{i}", margin_from_bn(bn), persistent=False)

    def notes(self):
        return [f"Overhaul: lambda {self.weight}, 6 features, dividers {DIVIDERS}, connectors at {self.lr_mult:g}x lr"]

    def forward(self, student, teacher, warmup=False):
        sources = [c(s) for c, s in zip(self.connectors, student.stages + student.heads)]
        margins = [getattr(self, f"margin{i}") for i in range(len(sources))]
        return {"overhaul": self.weight * overhaul_loss(sources, teacher.stages + teacher.heads, margins)}
