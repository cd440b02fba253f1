"""SKD pairwise distillation (Liu et al., CVPR 2019, "Structured Knowledge Distillation for Semantic
Segmentation"; irfanICMLL/structure_knowledge_distillation).

The last feature before the classifier (here the decoder tap, 256 channels) is max-pooled into nodes
(kernel = stride = ``pool_scale`` x its size, ceil mode), each node L2-normalised over channels (the norm
detached, as the reference); the loss is sum((S_t - S_s)^2) / (nodes^2) / batch over the node-by-node
cosine similarity matrices.  Defaults from its run script: pool scale 0.5, weight 0.5.  Channel counts
may differ (the matrices are nodes x nodes); a student feature of another size is resized to the teacher's.
"""
import torch
import torch.nn.functional as F

from utils.device import fp32

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


@register_method
class SKD(Method):
    name, title = "skd", "SKD"
    hyper = (Hyper("weight", "skd_lambda", 0.0, "SKD pairwise weight (run script: 0.5); 0 = off", paper=0.5, low=0),
             Hyper("pool_scale", "skd_pool_scale", 0.5, "SKD node size as a fraction of the feature, below 1",
                   low=0, low_open=True))

    @classmethod
    def check(cls, values, facts):
        if values["pool_scale"] >= 1:
            return (f"--skd_pool_scale {values['pool_scale']}: at 1 or more the feature pools to a single node and the "
                    f"pairwise term is always 0; give a fraction below 1")
        return super().check(values, facts)

    def forward(self, student, teacher, warmup=False):
        return {"skd": self.weight * skd_pairwise_loss(student.taps["decoder"], teacher.taps["decoder"],
                                                       self.pool_scale)}
