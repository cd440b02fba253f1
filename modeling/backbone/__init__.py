"""Backbones, registered by name with ``@register_backbone`` in their modules (imported here)."""
from . import mobilenet, resnet  # noqa: F401  (registers resnet18/34/50/101 and mobilenet)
from .base import BACKBONES, Backbone, build_backbone, register_backbone

__all__ = ["BACKBONES", "Backbone", "build_backbone", "register_backbone"]
