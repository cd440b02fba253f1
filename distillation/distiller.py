"""The Distiller: one frozen teacher and one student per step, and the sum of its methods' terms.

``distiller(images, labels=None, warmup=False) -> (student_logits, {term name: weighted loss})``; the training
loop adds the student's CE to the sum of the terms and knows nothing about any one method.  ``labels`` (the
ground truth) reach the methods that declare ``needs_labels`` (CIRKD's class memories) and a label-assisted
teacher (LAD), whose extra input channel is made from them.
"""
import torch
import torch.nn as nn

from modeling import TAPS
from utils.distributed import global_batch

from .base import METHODS
from .labels import label_input


class Distiller(nn.Module):
    takes_labels = True  # the training step passes the ground truth

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

    def clip_groups(self):
        """(parameters, max gradient norm) of the methods whose reference clips its modules' gradients (Af-DCD)."""
        groups = [([p for p in m.parameters() if p.requires_grad], m.clip_grad_norm) for m in self.methods.values()
                  if m.clip_grad_norm]
        return [(params, norm) for params, norm in groups if params]

    def load_trainable(self, state):
        """Load ``trainable_modules()`` weights; also the layout of earlier checkpoints, which held AttnFD's
        three connectors alone (``0.0.weight`` = backbone tap ...)."""
        if state and all(k.split(".")[0].isdigit() for k in state):
            state = {"attnfd.connectors." + TAPS[int(k.split(".")[0])] + "." + k.split(".", 1)[1]: v
                     for k, v in state.items()}
        self.trainable_modules().load_state_dict(state)

    def notes(self):
        return [line for m in self.methods.values() for line in m.notes()]

    def compile_methods(self, **options):
        """torch.compile each method alone (``train_kd.py --compile-methods``): its CBAMs, connectors and losses, the
        many small kernels of a step above its floor, fused; the student and the teacher run as they are, so it
        compiles in seconds.  ``options``: torch.compile's."""
        for method in self.methods.values():
            method.compile(**options)
        return self

    @torch.no_grad()
    def teacher_features(self, images, logits=False, stages=False, labels=None):
        """The teacher's taps (and logits / stages only when asked: nothing else is kept).  A label-assisted
        teacher (LAD) gets its label channel from ``labels`` (the fixed encoding of its distillation phase)."""
        if self.teacher.label_channel:
            if labels is None:
                raise ValueError("a label-assisted teacher (train.py --label-assisted) needs the labels")
            images = label_input(images, labels, self.teacher.num_classes)
        return self.teacher.forward_features(images, logits=logits, aspp_dropout=self.aspp_dropout, stages=stages)

    def student_features(self, images, stages=False):
        return self.student.forward_features(images, aspp_dropout=self.aspp_dropout, stages=stages)

    def forward(self, images, labels=None, warmup=False):
        """Student logits and every active method's terms.  ``warmup=True`` (epoch 0 of the AttnFD and
        Overhaul references) runs the student without autograd and only the methods that warm up: their
        modules learn, the student's weights get no gradient (its BN statistics still update)."""
        methods = [m for m in self.methods.values() if m.warmup or not warmup]
        t_needs = set().union(*(m.teacher_needs for m in methods))
        s_needs = set().union(*(m.student_needs for m in methods))
        t = self.teacher_features(images, logits="logits" in t_needs, stages="stages" in t_needs, labels=labels)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not warmup):
            s = self.student_features(images, stages="stages" in s_needs)
        terms = {}
        for m in methods:
            scale = 1 / global_batch(images) if m.divide_by_batch else 1
            given = {"labels": labels} if m.needs_labels else {}
            terms.update({k: v * scale for k, v in m(s, t, warmup=warmup, **given).items()})
        return s.logits, terms


def teacher_train_mode(requested, methods):
    """The teacher's mode: ``requested`` (``--[no-]teacher-train-mode``), or without it (None) train mode if the
    reference of any of ``methods`` (names) ran its teacher so (AttnFD, Overhaul), else eval mode.
    Returns (train mode?, reason)."""
    if requested is not None:
        return bool(requested), "--teacher-train-mode" if requested else "--no-teacher-train-mode"
    train = [name for name in methods if METHODS[name].teacher_train_mode]
    return bool(train), ("auto: the reference of " + ", ".join(train) + " does so" if train
                         else "auto: the active methods' references keep the teacher in eval mode")


def build_distiller(student, teacher, methods, teacher_train_mode=False, aspp_dropout=False, missing_attention=(),
                    dataset=None):
    """The Distiller of ``methods`` ({name: hyperparameter values}, in registry order); ValueError (one line,
    naming the flag) for impossible settings.  ``dataset``: the dataset name, for the methods whose published
    weights differ between datasets (CIRKD, Af-DCD)."""
    if not methods:
        raise ValueError("every distillation weight is 0 (" + ", ".join(f"--{m.hyper[0].flag}" for m in
                                                                      METHODS.values())
                         + "): turn one on, or train the baseline with train.py")
    built = [METHODS[name].build(student, teacher, values, missing_attention=missing_attention, dataset=dataset)
             for name, values in methods.items()]
    return Distiller(student, teacher, built, teacher_train_mode=teacher_train_mode, aspp_dropout=aspp_dropout)
