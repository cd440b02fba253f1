"""ResNet backbones of the pytorch-deeplab-xception / AttnFD lineage.

Blocks return the residual sum *before* ReLU and apply ReLU to their own input, so stage outputs
are pre-ReLU (what feature distillation taps) while values equal a standard ResNet.  Every block
of a layer uses that layer's dilation; ResNet-101's layer4 is the multi-grid unit (1, 2, 4).
Parameter names are torchvision's, so ImageNet weights load by name.
"""
import functools

import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import ResNet18_Weights, ResNet34_Weights, ResNet50_Weights, ResNet101_Weights

from ..cbam import CBAM
from ..imagenet import init_conv_bn, load_imagenet
from ..layers import AtrousConv2d
from .base import Backbone, register_backbone


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = AtrousConv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = AtrousConv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        x = F.relu(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out + (x if self.downsample is None else self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = AtrousConv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        x = F.relu(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + (x if self.downsample is None else self.downsample(x))


STRIDES = {16: ((1, 2, 2, 1), (1, 1, 1, 2)), 8: ((1, 2, 1, 1), (1, 1, 2, 4))}


class ResNet(Backbone):
    """``forward(x)`` returns the four pre-ReLU stage outputs (layer1..layer4); low-level = ReLU(stage 1),
    high-level = ReLU(stage 4)."""

    def __init__(self, block, layers, output_stride=16, multi_grid=None):
        super().__init__()
        if output_stride not in STRIDES:
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        strides, dilations = STRIDES[output_stride]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        grids = [(1,) * n for n in layers]
        if multi_grid:
            grids[3] = multi_grid
        for i, planes in enumerate((64, 128, 256, 512)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, strides[i], dilations[i], grids[i]))
        self.stage_channels = [c * block.expansion for c in (64, 128, 256, 512)]
        self.low_level_channels = self.stage_channels[0]
        self.out_channels = self.stage_channels[-1]
        self.cbam = CBAM(self.out_channels)
        # reference init: normal(0, sqrt(2 / (k*k*out))) for every conv (CBAM's included), BN 1/0
        init_conv_bn(self, functools.partial(nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu"))

    def _make_layer(self, block, planes, stride, dilation, grid):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self.inplanes, planes, stride, grid[0] * dilation, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes, 1, g * dilation) for g in grid[1:]]
        return nn.Sequential(*blocks)

    def stage_bns(self):
        """The last BatchNorm of each stage's last block (its output + the residual is the stage output)."""
        return [layer[-1].bn3 if isinstance(layer[-1], Bottleneck) else layer[-1].bn2
                for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        return stages


def _register(name, block, layers, weights, multi_grid=None):
    @register_backbone(name)
    def builder(output_stride=16, pretrained=False):
        model = ResNet(block, layers, output_stride, multi_grid)
        if pretrained:
            load_imagenet(model, weights)
        return model
    return builder


resnet18 = _register("resnet18", BasicBlock, (2, 2, 2, 2), ResNet18_Weights.IMAGENET1K_V1)
resnet34 = _register("resnet34", BasicBlock, (3, 4, 6, 3), ResNet34_Weights.IMAGENET1K_V1)
resnet50 = _register("resnet50", Bottleneck, (3, 4, 6, 3), ResNet50_Weights.IMAGENET1K_V1, multi_grid=(1, 2, 4))
resnet101 = _register("resnet101", Bottleneck, (3, 4, 23, 3), ResNet101_Weights.IMAGENET1K_V1, multi_grid=(1, 2, 4))
