"""Layers shared by the backbones and the ASPP."""
import contextlib

import torch.nn as nn
import torch.nn.functional as F


class AtrousConv2d(nn.Conv2d):
    """A stride-1 'same' dilated convolution (padding = dilation) that skips the kernel taps which only
    ever see zero padding.

    When the dilation is at least the feature map's height and width, every off-centre tap of a 3x3
    kernel reads padding for every output position, so only the centre tap contributes: the output
    and every gradient are those of the full convolution (the off-centre weights' gradients are
    exactly 0 in both), computed as a 1x1 convolution.  This happens on small inputs (the ASPP rate
    18 on a 257 px crop, rates 6-18 and the dilated ResNet layer4 on 64 px), where oneDNN otherwise
    spends most of a training step on the padding.  Same parameters and state-dict keys as nn.Conv2d.

    The choice depends on the input size, so a traced or exported graph would keep whichever branch its
    example input took: ``any_input_size()`` turns the shortcut off while exporting.
    """
    shortcut = True

    def forward(self, x):
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        if (AtrousConv2d.shortcut and self.stride == (1, 1) and self.padding == self.dilation and kh == kw == 3
                and dh >= x.shape[-2] and dw >= x.shape[-1]):
            return F.conv2d(x, self.weight[:, :, 1:2, 1:2], self.bias, groups=self.groups)
        return super().forward(x)


@contextlib.contextmanager
def any_input_size():
    """Within: every AtrousConv2d runs the full convolution, whatever the input size (for export)."""
    saved, AtrousConv2d.shortcut = AtrousConv2d.shortcut, False
    try:
        yield
    finally:
        AtrousConv2d.shortcut = saved
