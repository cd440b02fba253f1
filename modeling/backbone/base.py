"""The backbone protocol and registry: what DeepLab and the distillation methods use of a backbone."""
import torch.nn as nn

BACKBONES = {}


class Backbone(nn.Module):
    """A backbone sets, in its ``__init__``:

    * ``stage_channels``: the channels of its four stage outputs (stride 4, 8, 16, 16 at output stride 16);
    * ``low_level_channels`` (stage 1: the decoder's low-level input) and ``out_channels`` (stage 4: the ASPP's);
    * ``cbam``: ``CBAM(out_channels)``, AttnFD's attention at the backbone tap (checkpoint key ``backbone.cbam``);
    * ``stage_relu``: True when DeepLab applies ReLU to the stage outputs (ResNet: they are pre-ReLU residual
      sums), False for linear bottlenecks (MobileNetV2);

    and implements ``forward(x) -> [stage1, stage2, stage3, stage4]`` and ``stage_bns()``: the BatchNorm
    whose output (plus the residual in a ResNet) is each stage output (Overhaul's margins).
    Register a builder ``(output_stride=16, pretrained=False) -> Backbone`` with ``@register_backbone(name)``.
    """
    stage_relu = True

    def stage_bns(self):
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError


def register_backbone(name):
    """Decorator of a builder ``(output_stride=16, pretrained=False) -> Backbone``: ``--backbone name``."""
    def register(builder):
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = builder
        return builder
    return register


def build_backbone(name, output_stride=16, pretrained=False):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](output_stride=output_stride, pretrained=pretrained)
