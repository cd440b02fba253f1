"""SKD (Liu et al., CVPR 2019 / TPAMI 2020, "Structured Knowledge Distillation for Semantic Segmentation";
irfanICMLL/structure_knowledge_distillation, ``utils/criterion.py`` and its run script), **without the holistic
term**: the pixel-wise and pairwise terms, as the authors' run script weights them; its third term, holistic
distillation (a Wasserstein GAN whose discriminator scores segmentation maps, weight 0.1) is not implemented.

* Pixel-wise (``CriterionPixelWise``): the cross-entropy of the student's class distribution against the
  teacher's, at T 1, summed over the pixels of the batch and divided by H x W (not by the batch: at batch 8 it is
  8 x the pixel mean), weight 10;
* pairwise (``CriterionPairWiseforWholeFeatAfterPool``): the last feature before the classifier (here the decoder
  tap, 256 channels) max-pooled into nodes (kernel = stride = ``pool_scale`` x its size, ceil mode), each node
  L2-normalised over channels (the norm detached, as the reference); sum((S_t - S_s)^2) / (nodes^2) / batch over
  the node-by-node cosine similarity matrices; pool scale 0.5, weight 0.5.  Channel counts may differ (the
  matrices are nodes x nodes); a student feature of another size is resized to the teacher's.

``--skd_lambda`` scales both (1 = the run script's weights); ``--skd_pixelwise 0`` is the pairwise term alone,
what this codebase's SKD row was before the pixel-wise term existed.
"""
import torch
import torch.nn.functional as F

from utils.device import fp32
from utils.distributed import sum_over_ranks

from .base import Hyper, Method, global_mean, register_method, resize_to


def similarity(x):
    """(B, C, H, W) -> (B, nodes, nodes) cosine similarities, in fp32 (also under autocast)."""
    x = fp32(x)
    x = (x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-8).detach()).flatten(2)
    with torch.autocast(x.device.type, enabled=False):
        return x.transpose(1, 2) @ x


def skd_pairwise_loss(s, t, pool_scale=0.5):
    s = resize_to(s, t)
    kernel = (max(1, int(t.shape[2] * pool_scale)), max(1, int(t.shape[3] * pool_scale)))
    s, t = (F.max_pool2d(fp32(x), kernel, kernel, ceil_mode=True) for x in (s, t))
    nodes = t.shape[2] * t.shape[3]
    return global_mean((similarity(t) - similarity(s)).pow(2).sum() / nodes ** 2, s)


def skd_pixelwise_loss(s_logits, t_logits):
    """sum over the pixels of the global batch of -softmax(t) . log_softmax(s), divided by H x W, in fp32."""
    s, t = fp32(s_logits), fp32(t_logits).detach()
    ce = -(F.softmax(t, 1) * F.log_softmax(s, 1)).sum()
    return sum_over_ranks(ce) / (s.shape[2] * s.shape[3])


@register_method
class SKD(Method):
    name, title = "skd", "SKD (without the holistic term)"
    hyper = (Hyper("weight", "skd_lambda", 0.0, "SKD without its holistic (GAN) term: scales its pixel-wise and "
                   "pairwise terms (1: the run script's weights); 0 = off", paper=1.0, low=0),
             Hyper("pixelwise", "skd_pixelwise", 10.0, "SKD pixel-wise term weight (run script: 10; 0: pairwise only)",
                   low=0, term=True),
             Hyper("pairwise", "skd_pairwise", 0.5, "SKD pairwise term weight (run script: 0.5)", low=0, term=True),
             Hyper("pool_scale", "skd_pool_scale", 0.5, "SKD node size as a fraction of the feature, below 1",
                   low=0, low_open=True))
    teacher_needs = frozenset({"logits"})

    @classmethod
    def check(cls, values, facts):
        if values["pool_scale"] >= 1 and values["pairwise"] != 0:
            return (f"--skd_pool_scale {values['pool_scale']}: at 1 or more the feature pools to a single node and the "
                    f"pairwise term is always 0; give a fraction below 1")
        return super().check(values, facts)

    def forward(self, student, teacher, warmup=False):
        terms = {}
        if self.pixelwise:
            terms["skd/pixelwise"] = self.pixelwise * skd_pixelwise_loss(student.logits, teacher.logits)
        if self.pairwise:
            terms["skd/pairwise"] = self.pairwise * skd_pairwise_loss(student.taps["decoder"], teacher.taps["decoder"],
                                                                      self.pool_scale)
        return {k: self.weight * v for k, v in terms.items()}
