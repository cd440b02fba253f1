"""DeepLabV3+ decoder (reference names: conv1, bn1, last_conv.{0,1,4,5,8}, cbam)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .cbam import CBAM
from .imagenet import init_conv_bn


class Decoder(nn.Module):
    def __init__(self, num_classes, low_level_channels, channels=256):
        super().__init__()
        self.conv1 = nn.Conv2d(low_level_channels, 48, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(48)
        self.last_conv = nn.Sequential(
            nn.Conv2d(channels + 48, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(256, num_classes, 1),
        )
        self.cbam = CBAM(256)
        init_conv_bn(self, nn.init.kaiming_normal_)

    def forward(self, x, low_level):
        """last_conv[0:6]: the second conv + BN *before* its ReLU (Overhaul's decoder feature).
        ``DeepLab.forward_features`` applies the ReLU (AttnFD tap 3: last_conv[0:7]), then ``classify``."""
        low_level = F.relu(self.bn1(self.conv1(low_level)))
        x = F.interpolate(x, size=low_level.shape[2:], mode="bilinear", align_corners=True)
        return self.last_conv[:6](torch.cat([x, low_level], dim=1))

    def classify(self, tap):
        """last_conv[7:]: Dropout(0.1) and the 1x1 classifier."""
        return self.last_conv[7:](tap)
