"""ImageNet initialisation of backbones through torchvision's weights API, with an offline check."""
import os
from urllib.error import URLError

import torch
from torch.hub import get_dir


class MissingWeightsError(RuntimeError):
    """ImageNet weights are neither cached nor downloadable."""


def imagenet_state_dict(weights):
    """Return the state dict of torchvision ``weights`` (e.g. ``ResNet18_Weights.IMAGENET1K_V1``).

    Uses the torch hub cache ($TORCH_HOME/hub/checkpoints); downloads when the file is absent.
    Offline with no cached file this raises one clear MissingWeightsError naming the file.
    """
    filename = os.path.basename(weights.url)
    cached = os.path.join(get_dir(), "checkpoints", filename)
    try:
        return weights.get_state_dict(progress=False, weights_only=True)
    except (URLError, OSError, RuntimeError) as e:
        raise MissingWeightsError(
            f"ImageNet weights {filename} are not cached at {cached} and could not be downloaded "
            f"({type(e).__name__}: {e}). Copy the file to that path, or skip ImageNet "
            f"initialisation with --no-pretrained (pretrained_backbone=False in Python)."
        ) from None


def load_matching(module, state_dict, prefix_map=None, skip=()):
    """Copy tensors whose (renamed) names exist in ``module``; return the module keys not loaded."""
    own = module.state_dict()
    loaded = {}
    for k, v in state_dict.items():
        for src, dst in (prefix_map or {}).items():
            if k.startswith(src):
                k = dst + k[len(src):]
        if k in own and own[k].shape == v.shape and not any(s in k for s in skip):
            loaded[k] = v
    own.update(loaded)
    module.load_state_dict(own)
    return sorted(set(own) - set(loaded))


def load_imagenet(backbone, weights):
    """Load torchvision ImageNet ``weights`` into ``backbone`` by name; only CBAM may stay unset."""
    missing = load_matching(backbone, imagenet_state_dict(weights))
    not_cbam = [k for k in missing if not k.startswith("cbam.")]
    if not_cbam:
        raise RuntimeError(f"ImageNet weights {weights} left backbone keys unset: {not_cbam[:5]}")


@torch.no_grad()
def init_conv_bn(module, conv_init):
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            conv_init(m.weight)
        elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)):
            m.weight.fill_(1)
            m.bias.zero_()
