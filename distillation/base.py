"""The distillation interface: a ``Distiller`` runs one frozen teacher and one student per step and sums
the terms of its ``Method``s (AttnFD, KD, AT, Overhaul, CWD, DIST, SKD: any combination).

``distiller(images, warmup=False) -> (student_logits, {term name: weighted loss})``; the trainer adds the
student's CE to the sum of the terms and knows nothing about any one method.  Each method declares

* ``teacher_needs`` / ``student_needs``: what its loss reads besides the taps (``"logits"``, ``"stages"``:
  the pre-ReLU backbone stages and heads); the teacher runs once per step with the union of the needs;
* its trainable modules (connectors) as its own parameters, with ``lr_mult`` (x the base lr),
  ``warmup`` (they train alone in epoch 0, the student frozen: AttnFD's and Overhaul's reference
  scripts) and ``train_with_student`` (they stay in the main optimizer afterwards);
* how its loss reduces across DDP ranks: every method here reduces over the *global* batch (sums via
  ``utils.distributed.sum_over_ranks``, divided by global counts), so each rank holds the loss a single
  process would compute on the whole batch and gradients equal the single-process ones;
* ``teacher_train_mode``: whether its reference ran the teacher in train mode (used when neither
  ``--teacher-train-mode`` nor ``--no-teacher-train-mode`` is given);
* ``divide_by_batch``: whether the Distiller divides its terms by the global batch size.  This codebase's
  CE is divided by the batch size after its pixel mean (the reference's ``batch_average``, kept: AttnFD's
  and Overhaul's weights were set against it); KD, AT, CWD, DIST and SKD come from codebases whose CE is
  a plain mean, so their terms get the same division and keep their papers' ratio to the CE.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from modeling import TAPS
from utils.distributed import global_batch, sum_over_ranks


class Method(nn.Module):
    name = ""                  # term prefix in logs; also the registry key
    flag = ""                  # its weight flag (0 = off), e.g. "kd_lambda"
    teacher_needs = frozenset()
    student_needs = frozenset()
    warmup = False
    train_with_student = True
    lr_mult = 1.0
    teacher_train_mode = False
    divide_by_batch = True

    @staticmethod
    def add_args(parser):
        """Add the method's flags (its weight flag first) to ``parser``."""

    def notes(self):
        """Lines for the run log saying what was decided when the method was built."""
        return []

    def forward(self, student, teacher, warmup=False):
        """``student``, ``teacher``: ``modeling.Features``; returns {term name: weighted loss (fp32)}."""
        raise NotImplementedError


class Distiller(nn.Module):
    def __init__(self, student, teacher, methods, teacher_train_mode=False, aspp_dropout=False):
        super().__init__()
        if not methods:
            raise ValueError("no distillation method is on: give one of them a weight > 0")
        self.student, self.teacher = student, teacher
        self.methods = nn.ModuleDict({m.name: m for m in methods})
        self.teacher_train_mode = teacher_train_mode
        self.aspp_dropout = aspp_dropout  # reference: no ASPP dropout in the distillation forward
        for p in teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode=True):
        """The teacher follows the distiller into train mode (batch-statistics BN, dropout) when
        ``teacher_train_mode``, as the AttnFD and Overhaul references do; otherwise it stays in eval mode.
        It never gets gradients."""
        super().train(mode)
        self.teacher.train(mode and self.teacher_train_mode)
        return self

    @property
    def has_warmup(self):
        return any(m.warmup for m in self.trainable_modules().values())

    def trainable_modules(self):
        """The methods' own trainable modules by method name (checkpoint key ``connectors``)."""
        return nn.ModuleDict({n: m for n, m in self.methods.items() if next(m.parameters(), None) is not None})

    def param_groups(self, lr, phase):
        """Optimizer groups of the methods' modules: ``"warmup"`` (epoch 0 alone), ``"student"`` (in the
        main optimizer from the start), ``"late"`` (warm-up modules that join the main optimizer only
        when no warm-up epoch runs)."""
        pick = {"warmup": lambda m: m.warmup, "student": lambda m: m.train_with_student,
                "late": lambda m: m.warmup and not m.train_with_student}[phase]
        return [{"params": list(m.parameters()), "lr": lr * m.lr_mult, "name": n}
                for n, m in self.trainable_modules().items() if pick(m)]

    def load_trainable(self, state):
        """Load ``trainable_modules()`` weights; also the layout of earlier checkpoints, which held AttnFD's
        three connectors alone (``0.0.weight`` = backbone tap ...)."""
        if state and all(k.split(".")[0].isdigit() for k in state):
            state = {"attnfd.connectors." + TAPS[int(k.split(".")[0])] + "." + k.split(".", 1)[1]: v
                     for k, v in state.items()}
        self.trainable_modules().load_state_dict(state)

    def notes(self):
        return [line for m in self.methods.values() for line in m.notes()]

    @torch.no_grad()
    def teacher_features(self, images, logits=False, stages=False):
        """The teacher's taps (and logits / stages only when asked: nothing else is kept)."""
        return self.teacher.forward_features(images, logits=logits, aspp_dropout=self.aspp_dropout, stages=stages)

    def student_features(self, images, stages=False):
        return self.student.forward_features(images, aspp_dropout=self.aspp_dropout, stages=stages)

    def forward(self, images, warmup=False):
        """Student logits and every active method's terms.  ``warmup=True`` (epoch 0 of the AttnFD and
        Overhaul references) runs the student without autograd and only the methods that warm up: their
        modules learn, the student's weights get no gradient (its BN statistics still update)."""
        methods = [m for m in self.methods.values() if m.warmup or not warmup]
        t_needs = set().union(*(m.teacher_needs for m in methods))
        s_needs = set().union(*(m.student_needs for m in methods))
        t = self.teacher_features(images, logits="logits" in t_needs, stages="stages" in t_needs)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not warmup):
            s = self.student_features(images, stages="stages" in s_needs)
        terms = {}
        for m in methods:
            scale = 1 / global_batch(images) if m.divide_by_batch else 1
            terms.update({k: v * scale for k, v in m(s, t, warmup=warmup).items()})
        return s.logits, terms


def resize_to(s, t):
    """``s`` bilinearly resized to ``t``'s spatial size (align_corners=True, as the models), if it differs."""
    if s.shape[2:] == t.shape[2:]:
        return s
    return F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=True)


def global_mean(total, x, per_sample=1):
    """``total`` (a sum over this rank's part of the batch ``x``) divided by the global count
    ``global_batch(x) * per_sample``, summed over ranks: the single-process mean on every rank."""
    return sum_over_ranks(total) / (global_batch(x) * per_sample)
