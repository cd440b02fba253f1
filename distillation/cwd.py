"""CWD (Shu et al., ICCV 2021): channel-wise distillation of the logits.  Each class channel's map
becomes a distribution over the pixels (softmax of logits / T over H x W); the loss is
T^2 x sum over (sample, channel) of KL(teacher || student) / (N x C).

Defaults: the paper's setting for segmentation logits, T 4 and weight 3 (also CIRKD's
``--lambda-cwd-logit 3`` with temperature 4).
"""
import torch.nn.functional as F

from utils.device import fp32

from .base import Method, global_mean


def cwd_loss(s_logits, t_logits, temperature=4.0):
    s, t = fp32(s_logits).flatten(2) / temperature, fp32(t_logits).flatten(2) / temperature
    kl = (F.softmax(t, 2) * (F.log_softmax(t, 2) - F.log_softmax(s, 2))).sum()
    return temperature ** 2 * global_mean(kl, s, s.shape[1])


class CWD(Method):
    name, flag = "cwd", "cwd_lambda"
    teacher_needs = frozenset({"logits"})

    @staticmethod
    def add_args(p):
        p.add_argument("--cwd_lambda", type=float, default=0.0, help="CWD weight (paper: 3); 0 = off")
        p.add_argument("--cwd_T", type=float, default=4.0, help="CWD temperature (paper: 4)")

    @classmethod
    def from_args(cls, student, teacher, args, **_):
        return cls(args.cwd_lambda, args.cwd_T)

    def __init__(self, weight=3.0, temperature=4.0):
        super().__init__()
        self.weight, self.temperature = weight, temperature

    def notes(self):
        return [f"CWD: lambda {self.weight}, T {self.temperature}"]

    def forward(self, student, teacher, warmup=False):
        return {"cwd": self.weight * cwd_loss(student.logits, teacher.logits, self.temperature)}
