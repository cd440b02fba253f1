"""DIST (Huang et al., NeurIPS 2022): relations instead of exact matches.  With p = softmax(logits / T)
per pixel, inter-class = 1 - mean over pixels of Pearson(p_s, p_t) across classes, intra-class = 1 - mean
over classes of Pearson across all pixels of the batch; loss = T^2 (beta inter + gamma intra).

Defaults: DIST's segmentation code (hunto/DIST_KD, ``segmentation/``): T 1, beta 1, gamma 1, weight 1.
Under DDP the intra-class Pearson runs over the pixels of the global batch, from sums over ranks.
"""
from utils.device import fp32
from utils.distributed import global_batch, sum_over_ranks

from .base import Hyper, LogitsMethod, register_method

EPS = 1e-8


def _pearson_rows(a, b):
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def dist_loss(s_logits, t_logits, beta=1.0, gamma=1.0, temperature=1.0):
    c = s_logits.shape[1]
    s = (fp32(s_logits) / temperature).softmax(1).transpose(1, 3).reshape(-1, c)  # (pixels, classes)
    t = (fp32(t_logits) / temperature).softmax(1).transpose(1, 3).reshape(-1, c)
    pixels = global_batch(s_logits) * s_logits.shape[2] * s_logits.shape[3]
    inter = 1 - sum_over_ranks(_pearson_rows(s, t).sum()) / pixels
    # per class over the global batch's pixels: centred by the global mean, sums over ranks
    s, t = s - sum_over_ranks(s.sum(0)) / pixels, t - sum_over_ranks(t.sum(0)) / pixels
    cov, s_sq, t_sq = (sum_over_ranks(v) for v in ((s * t).sum(0), (s * s).sum(0), (t * t).sum(0)))
    intra = 1 - (cov / (s_sq.sqrt() * t_sq.sqrt() + EPS)).mean()
    return temperature ** 2 * (beta * inter + gamma * intra)


@register_method
class DIST(LogitsMethod):
    name, title = "dist", "DIST"
    hyper = (Hyper("weight", "dist_lambda", 0.0, "DIST weight (its segmentation code: 1); 0 = off", paper=1.0, low=0),
             Hyper("beta", "dist_beta", 1.0, "DIST inter-class weight", low=0, term=True),
             Hyper("gamma", "dist_gamma", 1.0, "DIST intra-class weight", low=0, term=True),
             Hyper("temperature", "dist_T", 1.0, "DIST temperature", low=0, low_open=True))

    loss = staticmethod(dist_loss)
