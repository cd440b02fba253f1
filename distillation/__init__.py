"""Registry of distillation methods: name -> builder(student, teacher, args) -> Distiller."""
from .attnfd import AttnFD, attnfd_loss, build_connector, resolve_teacher_attention
from .base import Distiller


def _attnfd(student, teacher, args):
    return AttnFD(student, teacher, attn_lambda=args.attn_lambda, teacher_attention=args.teacher_attention,
                  normalization=args.attn_norm, teacher_train_mode=args.teacher_train_mode,
                  aspp_dropout=args.distill_aspp_dropout)


DISTILLERS = {"attnfd": _attnfd}


def build_distiller(name, student, teacher, args):
    if name not in DISTILLERS:
        raise ValueError(f"--method {name!r} is not available; choose one of {sorted(DISTILLERS)}")
    return DISTILLERS[name](student, teacher, args)


__all__ = ["AttnFD", "DISTILLERS", "Distiller", "attnfd_loss", "build_connector", "build_distiller",
           "resolve_teacher_attention"]
