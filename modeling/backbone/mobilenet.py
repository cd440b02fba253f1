"""MobileNetV2 (width 1.0) backbone on torchvision's module tree, dilated to the output stride.

Low-level feature = features[0:4] (24 ch, stride 4); high-level = features[4:18] (320 ch).
MobileNetV2 has linear bottlenecks, so stage outputs carry no ReLU.  Key compatibility with the
reference MobileNetV2 is not a goal; torchvision's names let ImageNet weights load directly.
"""
import torch.nn as nn
from torchvision.models import MobileNet_V2_Weights
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

from ..cbam import CBAM
from ..imagenet import init_conv_bn, load_imagenet
from .base import Backbone, register_backbone

STAGES = ((0, 4), (4, 7), (7, 14), (14, 18))


class MobileNetV2(Backbone):
    stage_relu = False  # linear bottlenecks: the stage outputs carry no ReLU

    def __init__(self, output_stride=16):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        self.features = tv_mobilenet_v2(weights=None).features[:-1]  # drop the 1280-ch head conv
        self._dilate(output_stride)
        self.stage_channels = [24, 32, 96, 320]
        self.low_level_channels, self.out_channels = 24, 320
        self.cbam = CBAM(self.out_channels)
        init_conv_bn(self, lambda w: nn.init.kaiming_normal_(w, mode="fan_out"))

    def _dilate(self, output_stride):
        stride, dilation = 1, 1
        for m in self.features.modules():
            if not isinstance(m, nn.Conv2d) or m.kernel_size == (1, 1):
                continue
            if m.stride == (2, 2):
                if stride == output_stride:
                    m.stride, dilation = (1, 1), dilation * 2
                else:
                    stride *= 2
            if dilation > 1:
                m.dilation, m.padding = (dilation, dilation), (dilation, dilation)

    def stage_bns(self):
        """The last BatchNorm of each stage (linear bottleneck: its output is the stage output)."""
        return [[m for m in self.features[a:b].modules() if isinstance(m, nn.BatchNorm2d)][-1] for a, b in STAGES]

    def forward(self, x):
        stages = []
        for a, b in STAGES:
            x = self.features[a:b](x)
            stages.append(x)
        return stages


@register_backbone("mobilenet")
def mobilenet_v2(output_stride=16, pretrained=False):
    model = MobileNetV2(output_stride)
    if pretrained:
        load_imagenet(model, MobileNet_V2_Weights.IMAGENET1K_V1)
    return model
