"""DeepLabV3+ with the AttnFD taps (arXiv 2403.05451), key-compatible with the published checkpoints.

``DeepLab(...)(x)`` returns logits at input resolution.  ``model.forward_features(x)`` returns the
logits plus the features distillation needs (``Features``): the three AttnFD taps and the pre-ReLU
backbone stage outputs.  With ``attention_in_path=True`` the model's CBAM modules refine the three
taps inside the forward path, so a teacher trained that way has attention weights that were trained.
With ``label_channel=True`` the first convolution takes a 4th input channel, a label map (Label-Assisted
Distillation's teacher, ``distillation.labels``); a 3-channel input then gets an all-zero 4th channel.
"""
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .aspp import ASPP
from .backbone import build_backbone
from .decoder import Decoder

TAPS = ("backbone", "aspp", "decoder")


@dataclass
class Features:
    logits: torch.Tensor
    taps: dict = field(default_factory=dict)    # name in TAPS -> tap feature (before CBAM)
    stages: list = field(default_factory=list)  # pre-ReLU backbone stage outputs, layer1..layer4
    heads: list = field(default_factory=list)   # pre-ReLU ASPP (conv1+bn1) and decoder (last_conv[0:6]) outputs


class DeepLab(nn.Module):
    def __init__(self, num_classes=21, backbone="resnet101", output_stride=16, pretrained_backbone=False,
                 attention_in_path=False, freeze_bn=False, label_channel=False):
        super().__init__()
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.attention_in_path = attention_in_path
        self.label_channel = label_channel
        self.backbone = build_backbone(backbone, output_stride, pretrained_backbone)
        if label_channel:
            _add_input_channel(self.backbone)
        self.aspp = ASPP(self.backbone.out_channels, output_stride)
        self.decoder = Decoder(num_classes, self.backbone.low_level_channels)
        self.bn_frozen = freeze_bn

    @property
    def tap_channels(self):
        return {"backbone": self.backbone.out_channels, "aspp": 256, "decoder": 256}

    def attention(self):
        """The model's own CBAM modules, by tap name."""
        return {"backbone": self.backbone.cbam, "aspp": self.aspp.cbam, "decoder": self.decoder.cbam}

    def forward_features(self, x, logits=True, aspp_dropout=True, stages=True):
        """One forward pass returning logits (None if ``logits=False``), the taps and (``stages=True``)
        the backbone stages and the pre-ReLU heads; what is not asked for is not kept alive.

        ``aspp_dropout=False`` skips the ASPP Dropout(0.5) between the ASPP tap and the decoder, as the
        reference's distillation forward (``extract_feature``) does for teacher and student; plain
        ``forward`` (training a baseline, validation) keeps it.  The decoder's dropouts always stay.
        """
        size = x.shape[2:]
        if self.label_channel and x.shape[1] == 3:
            x = torch.cat([x, x.new_zeros(x.shape[0], 1, *size)], 1)
        keep_stages, stages = stages, self.backbone(x)
        act = F.relu if self.backbone.stage_relu else (lambda t: t)
        refine = self.attention() if self.attention_in_path else dict.fromkeys(TAPS, nn.Identity())
        taps = {"backbone": stages[-1]}
        x = act(refine["backbone"](taps["backbone"]))
        heads = [self.aspp(x)]
        taps["aspp"] = F.relu(heads[0])
        x = refine["aspp"](taps["aspp"])
        if aspp_dropout:
            x = self.aspp.dropout(x)
        heads.append(self.decoder(x, act(stages[0])))
        taps["decoder"] = F.relu(heads[1])
        out = None
        if logits:
            out = self.decoder.classify(refine["decoder"](taps["decoder"]))
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        return Features(out, taps, stages if keep_stages else [], heads if keep_stages else [])

    def forward(self, x):
        return self.forward_features(x, stages=False).logits

    @property
    def pre_relu_channels(self):
        """Channels of ``Features.stages + Features.heads``."""
        return list(self.backbone.stage_channels) + [256, 256]

    def bns_before_relu(self):
        """The BatchNorm whose output (plus the residual, in a ResNet stage) is each of ``Features.stages +
        Features.heads`` (Overhaul's ``get_bn_before_relu``)."""
        return self.backbone.stage_bns() + [self.aspp.bn1, self.decoder.last_conv[5]]

    def freeze_bn(self):
        """Keep every BatchNorm in eval mode (running statistics fixed) from now on, also in train()."""
        self.bn_frozen = True
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if mode and self.bn_frozen:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def param_groups(self, lr, attention_mlp=True):
        """Backbone (CBAM included) at ``lr``; ASPP + decoder (CBAM included) at 10x ``lr``.

        The reference collects only Conv2d/BN parameters, so its CBAM Linear layers (the channel
        gate's MLP) never train; here every parameter of a part trains with that part, unless
        ``attention_mlp=False`` reproduces the reference (CBAM's spatial conv + BN still train).
        With ``freeze_bn`` the BatchNorm weights and biases are left out, as the reference's
        ``get_1x_lr_params`` does, so they stay fixed with the statistics.
        """
        def params(*parts):
            frozen = nn.modules.batchnorm._BatchNorm if self.bn_frozen else ()
            return [p for part in parts for name, m in part.named_modules()
                    for n, p in m.named_parameters(recurse=False)
                    if p.requires_grad and not isinstance(m, frozen)
                    and (attention_mlp or ".ChannelGate.mlp." not in f".{name}.{n}")]

        return [{"params": params(self.backbone), "lr": lr}, {"params": params(self.aspp, self.decoder), "lr": lr * 10}]


def _add_input_channel(backbone):
    """The backbone's first convolution with a 4th input channel: the RGB weights kept, the new channel's
    N(0, 0.1^2) (Label-Assisted Distillation pads its ImageNet weights so).  Its state-dict key stays."""
    name, conv = next((n, m) for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d))
    wide = nn.Conv2d(conv.in_channels + 1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        wide.weight[:, :conv.in_channels] = conv.weight
        wide.weight[:, conv.in_channels:] = 0.1 * torch.randn_like(conv.weight[:, :1])
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    parent = backbone.get_submodule(name.rpartition(".")[0]) if "." in name else backbone
    setattr(parent, name.rpartition(".")[2], wide)


def num_params(module, attention=True):
    """Parameter count, optionally without CBAM modules."""
    return sum(p.numel() for n, p in module.named_parameters() if attention or ".cbam." not in f".{n}")


def _unwrap(state):
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError("checkpoint holds no state dict")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def model_from_checkpoint(checkpoint, backbone=None, output_stride=None, num_classes=None,
                          default_backbone="resnet101"):
    """The one way to rebuild a DeepLab from a checkpoint dict (as read by ``utils.saver.load_file``).

    Backbone, output stride and ``attention_in_path`` come from the ``args`` the checkpoint records
    (arguments given here win; published checkpoints record none: ``default_backbone``, OS 16); the
    class count from the classifier's weight.  Returns ``(model, missing_attention_keys, recorded_args)``.
    """
    saved = checkpoint.get("args", {}) if isinstance(checkpoint, dict) else {}
    state = _unwrap(checkpoint)
    if num_classes is None:
        weight = state.get("decoder.last_conv.8.weight")
        if weight is None:
            raise ValueError("checkpoint has no classifier weight decoder.last_conv.8.weight; is it a DeepLab?")
        num_classes = weight.shape[0]
    model = DeepLab(num_classes=num_classes, backbone=backbone or saved.get("backbone", default_backbone),
                    output_stride=output_stride or saved.get("out_stride", 16),
                    attention_in_path=bool(saved.get("attention_in_path", False)),
                    label_channel=bool(saved.get("label_assisted", False)))
    return model, load_checkpoint(model, state), saved


def load_checkpoint(model, checkpoint, map_location="cpu"):
    """Load a DeepLab checkpoint (path or dict) into ``model``; return the attention keys it lacked.

    Accepts the published AttnFD format (strict: every key, CBAM included) and
    pytorch-deeplab-xception checkpoints, which have the same keys minus ``*.cbam.*``: those CBAM
    weights then keep their initial values, and their names are returned so the caller can report
    them.  Files are read with ``weights_only=True``; no pickled code runs.
    """
    if isinstance(checkpoint, (str, bytes)) or hasattr(checkpoint, "__fspath__"):
        checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
    state = _unwrap(checkpoint)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    missing_attention = [k for k in missing if ".cbam." in f".{k}"]
    problems = [k for k in missing if k not in missing_attention]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                 if k in own and v.shape != own[k].shape]
    if problems:
        raise ValueError(
            f"checkpoint does not match DeepLab({model.backbone_name}, {model.num_classes} classes): "
            f"{len(problems)} problems, e.g. {'; '.join(problems[:3])}; check --backbone, --out-stride and the "
            f"number of classes of the run that wrote it"
        )
    model.load_state_dict(state, strict=False)
    return missing_attention
