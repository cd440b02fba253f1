"""Registry of backbone names -> builders ``(output_stride, pretrained) -> nn.Module``."""
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet34, resnet50, resnet101

BACKBONES = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "mobilenet": mobilenet_v2,
}


def build_backbone(name, output_stride=16, pretrained=False):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](output_stride=output_stride, pretrained=pretrained)
