"""The distiller interface: one student, one frozen teacher, method-specific trainable modules.

``distiller(images, warmup=False) -> (student_logits, {name: weighted loss term})``; the trainer adds
the student's CE to the sum of the terms.  ``extra_modules()`` are the method's own trainable
modules (AttnFD's connectors), optimised by their own optimizer during warm-up epochs and, if a
method wants it, afterwards (``train_extra_after_warmup``).
"""
import torch
import torch.nn as nn


class Distiller(nn.Module):
    train_extra_after_warmup = False

    def __init__(self, student, teacher, teacher_train_mode=False, aspp_dropout=False):
        super().__init__()
        self.student, self.teacher = student, teacher
        self.teacher_train_mode = teacher_train_mode
        self.aspp_dropout = aspp_dropout  # reference: no ASPP dropout in the distillation forward
        for p in teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode=True):
        """The teacher follows the distiller into train mode (batch-statistics BN, dropout) when
        ``teacher_train_mode``, as the reference does and as train_kd.py does by default (the study in
        the README found it better); otherwise it stays in eval mode.  It never gets gradients."""
        super().train(mode)
        self.teacher.train(mode and self.teacher_train_mode)
        return self

    def extra_modules(self):
        return nn.ModuleList()

    @torch.no_grad()
    def teacher_features(self, images, logits=False, stages=False):
        """The teacher's taps (and logits / backbone stages only when asked: nothing else is kept)."""
        return self.teacher.forward_features(images, logits=logits, aspp_dropout=self.aspp_dropout, stages=stages)

    def student_features(self, images, stages=False):
        return self.student.forward_features(images, aspp_dropout=self.aspp_dropout, stages=stages)

    def forward(self, images, warmup=False):
        raise NotImplementedError
