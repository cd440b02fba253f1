"""ASPP of DeepLabV3+ (reference names: aspp1..aspp4, global_avg_pool, conv1, bn1, cbam)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .cbam import CBAM
from .imagenet import init_conv_bn
from .layers import AtrousConv2d

RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


class ASPPBranch(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, dilation):
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation
        self.atrous_conv = AtrousConv2d(in_channels, out_channels, kernel_size, padding=padding,
                                     dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    def __init__(self, in_channels, output_stride=16, channels=256):
        super().__init__()
        if output_stride not in RATES:
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        r1, r2, r3 = RATES[output_stride]
        self.aspp1 = ASPPBranch(in_channels, channels, 1, 1)
        self.aspp2 = ASPPBranch(in_channels, channels, 3, r1)
        self.aspp3 = ASPPBranch(in_channels, channels, 3, r2)
        self.aspp4 = ASPPBranch(in_channels, channels, 3, r3)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(5 * channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(0.5)
        self.cbam = CBAM(channels)
        init_conv_bn(self, nn.init.kaiming_normal_)

    def forward(self, x):
        """conv1 + bn1 output *before* its ReLU (Overhaul's ASPP feature).  ``DeepLab.forward_features`` applies
        the ReLU (AttnFD tap 2), then ``dropout``."""
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)
        return self.bn1(self.conv1(x))
