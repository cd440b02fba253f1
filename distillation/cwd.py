"""CWD (Shu et al., ICCV 2021): channel-wise distillation of the logits.  Each class channel's map
becomes a distribution over the pixels (softmax of logits / T over H x W); the loss is
T^2 x sum over (sample, channel) of KL(teacher || student) / (N x C).

Defaults: the paper's setting for segmentation logits, T 4 and weight 3 (also CIRKD's
``--lambda-cwd-logit 3`` with temperature 4).
"""
import torch.nn.functional as F

from utils.device import fp32

from .base import Hyper, LogitsMethod, global_mean, register_method


def cwd_loss(s_logits, t_logits, temperature=4.0):
    s, t = fp32(s_logits).flatten(2) / temperature, fp32(t_logits).flatten(2) / temperature
    kl = (F.softmax(t, 2) * (F.log_softmax(t, 2) - F.log_softmax(s, 2))).sum()
    return temperature ** 2 * global_mean(kl, s, s.shape[1])


@register_method
class CWD(LogitsMethod):
    """Shu et al., ICCV 2021: a distribution over the pixels per class channel, at the logits (the paper's
    segmentation setting; CIRKD's too)."""
    name, title = "cwd", "CWD"
    hyper = (Hyper("weight", "cwd_lambda", 0.0, "CWD weight (paper: 3); 0 = off", paper=3.0, low=0),
             Hyper("temperature", "cwd_T", 4.0, "CWD temperature (paper: 4)", low=0, low_open=True))

    loss = staticmethod(cwd_loss)
