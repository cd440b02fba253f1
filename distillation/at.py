"""AT (Zagoruyko & Komodakis, ICLR 2017): attention transfer at the four backbone stages.  The
attention map of a stage is the channel mean of its squared activations, flattened and L2-normalised
per sample; the loss is beta/2 x sum over stages of mean((Q_s - Q_t)^2): the paper's beta/2 (its eq. 2) on the
distance its code computes (``utils.at_loss``: the mean of the squared differences; the paper writes a p-norm and
folds the map size and batch into beta), beta = 1000 (its default; CIRKD applies the same map to one late feature
with weight 1e4).  The authors' training scripts (szagoruyko/attention-transfer, cifar.py / imagenet.py) add beta x
the sum, twice this term: ``--at-formula code`` (their 1-GPU term; imagenet.py's ``--ngpu 2`` sums the two GPUs'
means, twice that again).  The default stays ``paper``: this codebase's AT rows were measured with it, and the
code's term is it at beta = 2000, one flag away.

Activations are the stage outputs after their ReLU, as the paper's (ResNet stage outputs); a student map
of another resolution is resized to the teacher's.  Channel counts may differ: the maps are channel means.
"""
import torch.nn.functional as F

from utils.device import fp32

from .base import Hyper, Method, global_mean, register_method, resize_to


def attention_map(x):
    """(B, C, H, W) -> (B, 1, H, W): mean over channels of x^2, in fp32."""
    return fp32(x).pow(2).mean(1, keepdim=True)


def at_loss(s, t):
    """mean over the global batch and the pixels of (Q_s - Q_t)^2, Q = map / ||map|| per sample."""
    q_s = F.normalize(resize_to(attention_map(s), t).flatten(1), dim=1)
    q_t = F.normalize(attention_map(t).flatten(1), dim=1)
    return global_mean((q_s - q_t).pow(2).sum(), q_s, q_s.shape[1])


@register_method
class AT(Method):
    name, title = "at", "AT"
    hyper = (Hyper("weight", "at_lambda", 0.0, "AT weight beta (paper: 1000); 0 = off", paper=1000.0, low=0),
             Hyper("formula", "at-formula", "paper", "AT's sum over stages times beta/2 (paper: the paper's formula) "
                   "or times beta (code: the authors' training scripts, which produced its published numbers; the "
                   "same as the paper's with twice the beta)", choices=("paper", "code")))
    teacher_needs = student_needs = frozenset({"stages"})

    def __init__(self, student, teacher, **values):
        super().__init__(student, teacher, **values)
        self.student_relu, self.teacher_relu = student.backbone.stage_relu, teacher.backbone.stage_relu

    def forward(self, student, teacher, warmup=False):
        act = lambda x, relu: F.relu(x) if relu else x  # noqa: E731
        total = sum(at_loss(act(s, self.student_relu), act(t, self.teacher_relu))
                    for s, t in zip(student.stages, teacher.stages))
        return {"at": self.weight * (1.0 if self.formula == "code" else 0.5) * total}
