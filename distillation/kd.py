"""KD (Hinton et al., 2015), pixel-wise: KL(softmax(t / T) || softmax(s / T)) x T^2, mean over pixels.

Defaults as the segmentation distillation benchmarks that report KD for DeepLabV3 students (CIRKD,
Yang et al. 2022, ``--kd-temperature 1 --lambda-kd 1``; DIST's segmentation code uses the same): T 1,
weight 1.  All pixels count (also ignore-label ones), as there.
"""
import torch.nn.functional as F

from utils.device import fp32

from .base import Hyper, LogitsMethod, global_mean, register_method


def kd_loss(s_logits, t_logits, temperature=1.0):
    """T^2 x the mean over the pixels of the global batch of sum_c p_t (log p_t - log p_s), in fp32."""
    s, t = fp32(s_logits) / temperature, fp32(t_logits) / temperature
    kl = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum()
    return temperature ** 2 * global_mean(kl, s, s.shape[2] * s.shape[3])


@register_method
class KD(LogitsMethod):
    """Hinton et al. 2015, per pixel; CIRKD's setting."""
    name, title = "kd", "KD"
    hyper = (Hyper("weight", "kd_lambda", 0.0, "KD weight (CIRKD: 1); 0 = off", paper=1.0, low=0),
             Hyper("temperature", "kd_T", 1.0, "KD temperature (CIRKD: 1)", low=0, low_open=True))

    loss = staticmethod(kd_loss)
