"""CBAM (Woo et al., 2018) as used by AttnFD: channel gate, then spatial gate.

Parameter names follow the reference checkpoints: ``ChannelGate.mlp.{1,3}`` and
``SpatialGate.spatial.{conv,bn}``.  ``CBAM(c, learned=False)`` is the reference's
parameter-free "teacher" mode: channel weights sigmoid(avgpool + maxpool) and spatial weights
sigmoid(max_c + mean_c), with no parameters at all.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelGate(nn.Module):
    def __init__(self, channels, reduction=16, learned=True):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        ) if learned else None

    def forward(self, x):
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = F.adaptive_max_pool2d(x, 1)  # as the reference's max_pool2d: gradient to one index, no full-map mask
        if self.mlp is None:
            return x * torch.sigmoid(avg + mx)
        att = self.mlp(avg) + self.mlp(mx)
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialConv(nn.Module):
    """conv 7x7 (2 -> 1, no bias) + BN(eps 1e-5, momentum 0.01), no ReLU."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    def __init__(self, learned=True):
        super().__init__()
        self.spatial = SpatialConv() if learned else None

    def attention(self, x):
        """The spatial attention map, B x 1 x H x W in (0, 1)."""
        pooled = torch.cat([torch.max(x, dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], dim=1)
        att = pooled.sum(dim=1, keepdim=True) if self.spatial is None else self.spatial(pooled)
        return torch.sigmoid(att)

    def forward(self, x):
        return x * self.attention(x)


class CBAM(nn.Module):
    def __init__(self, channels, reduction=16, learned=True):
        super().__init__()
        self.channels = channels
        self.learned = learned
        self.ChannelGate = ChannelGate(channels, reduction, learned)
        self.SpatialGate = SpatialGate(learned)

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x))

    def spatial_attention(self, x):
        """The spatial gate's map (computed after the channel gate, as in forward), B x 1 x H x W."""
        return self.SpatialGate.attention(self.ChannelGate(x))

    def extra_repr(self):
        return f"channels={self.channels}, learned={self.learned}"
