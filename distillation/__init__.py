"""Distillation methods, each switched on by its own weight flag (0 = off) and combinable:
name -> Method class.  ``add_args(parser)`` adds every method's flags; ``build_distiller`` builds the
``Distiller`` with the methods whose weight is not 0."""
from .at import AT, at_loss
from .attnfd import AttnFD, attnfd_loss, build_connector, resolve_teacher_attention
from .base import Distiller, Method
from .cwd import CWD, cwd_loss
from .dist import DIST, dist_loss
from .kd import KD, kd_loss
from .overhaul import Overhaul, margin_from_bn, overhaul_loss, overhaul_partial_l2
from .skd import SKD, skd_pairwise_loss

METHODS = {m.name: m for m in (AttnFD, KD, AT, Overhaul, CWD, DIST, SKD)}


def add_args(parser):
    for method in METHODS.values():
        method.add_args(parser)


def active_methods(args):
    return [m for m in METHODS.values() if getattr(args, m.flag) != 0]


def teacher_train_mode(args):
    """Without ``--[no-]teacher-train-mode`` (None): train mode if the reference of any active method ran its
    teacher so (AttnFD, Overhaul), else eval mode.  Returns (train mode?, reason)."""
    if args.teacher_train_mode is not None:
        return bool(args.teacher_train_mode), ("--teacher-train-mode" if args.teacher_train_mode
                                               else "--no-teacher-train-mode")
    train = [m.name for m in active_methods(args) if m.teacher_train_mode]
    return bool(train), ("auto: the reference of " + ", ".join(train) + " does so" if train
                         else "auto: the active methods' references keep the teacher in eval mode")


def build_distiller(student, teacher, args, missing_attention=()):
    """The Distiller of the methods whose weight flag is not 0; ValueError (one line, naming the flag)
    for impossible settings."""
    methods = active_methods(args)
    if not methods:
        raise ValueError("every distillation weight is 0 (" + ", ".join(f"--{m.flag}" for m in METHODS.values())
                         + "): turn one on, or train the baseline with train.py")
    train_mode, _ = teacher_train_mode(args)
    return Distiller(student, teacher,
                     [m.from_args(student, teacher, args, missing_attention=missing_attention) for m in methods],
                     teacher_train_mode=train_mode, aspp_dropout=args.distill_aspp_dropout)


__all__ = ["AT", "AttnFD", "CWD", "DIST", "Distiller", "KD", "METHODS", "Method", "Overhaul", "SKD",
           "active_methods", "add_args", "at_loss", "attnfd_loss", "build_connector", "build_distiller", "cwd_loss",
           "dist_loss", "kd_loss", "margin_from_bn", "overhaul_loss", "overhaul_partial_l2",
           "resolve_teacher_attention", "skd_pairwise_loss", "teacher_train_mode"]
