"""Distillation methods, each switched on by its own weight flag (0 = off) and combinable.

``METHODS`` (name -> Method class) is filled by ``@register_method`` in each module; the imports below are the
registry lines, in the order the terms are built, summed and logged (README "Extend").
"""
# isort: off
from . import attnfd, kd, at, overhaul, cwd, dist, skd, cirkd, lad, afdcd  # noqa: F401
# isort: on
from .afdcd import AfDCD, contrastive_loss, mimic_loss
from .at import AT, at_loss
from .attnfd import AttnFD, attnfd_loss, build_connector, resolve_teacher_attention
from .base import METHODS, Hyper, LogitsMethod, Method, RunFacts, register_method
from .cirkd import CIRKD, ClassMemory, memory_contrast_loss, minibatch_loss
from .cwd import CWD, cwd_loss
from .dist import DIST, dist_loss
from .distiller import Distiller, build_distiller, teacher_train_mode
from .kd import KD, kd_loss
from .labels import label_input, random_label_input
from .lad import LAD, LabelAssistedTeacher
from .overhaul import Overhaul, margin_from_bn, overhaul_loss, overhaul_partial_l2
from .skd import SKD, skd_pairwise_loss, skd_pixelwise_loss


def add_args(parser):
    """Every method's flags (its weight first), one argument group per method."""
    for method in METHODS.values():
        method.add_args(parser)


def settings_from_args(args):
    """{name: {hyperparameter: value}} of the methods whose weight flag is not 0, in registry order: what
    ``build_distiller`` takes (the one place method flags are read)."""
    values = {name: m.values_from_args(args) for name, m in METHODS.items()}
    return {name: v for name, v in values.items() if v[METHODS[name].hyper[0].name] != 0}


__all__ = ["AT", "AfDCD", "AttnFD", "CIRKD", "CWD", "ClassMemory", "DIST", "Distiller", "Hyper", "KD", "LAD",
           "LabelAssistedTeacher", "LogitsMethod", "METHODS", "Method", "Overhaul", "SKD", "add_args", "at_loss",
           "attnfd_loss", "build_connector", "build_distiller", "contrastive_loss", "cwd_loss", "dist_loss", "kd_loss",
           "label_input", "margin_from_bn", "memory_contrast_loss", "mimic_loss", "minibatch_loss", "overhaul_loss",
           "overhaul_partial_l2", "random_label_input", "RunFacts", "register_method", "resolve_teacher_attention",
           "settings_from_args", "skd_pairwise_loss", "skd_pixelwise_loss", "teacher_train_mode"]
