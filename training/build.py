"""Builders of what a training run is made of; each takes the values it uses."""
import os
import random

import numpy as np
import torch

from utils.calculate_weights import calculate_weights_labels
from utils.inference import load_model
from utils.saver import CheckpointError

from .args import DEFAULT_TEACHER

TEACHER_URL = "https://drive.google.com/file/d/1_TM1p38Ev-e-P68YUQGMo7YpkK_-AUFq/view?usp=sharing"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SGD(torch.optim.SGD):
    """torch.optim.SGD with the multi-tensor (foreach) update, also on CPU where it is not torch's default (the
    same update, a few kernels for all parameters instead of several per tensor: ResNet-101 step at 64 px -14%),
    or with ``fused=True`` (``--fused-sgd``: one kernel per parameter for the whole update, a ResNet-101 update
    0.19 -> 0.04 s on 2 CPU cores; it rounds a few weights per step differently in the last digit, so it is not
    the default: the README's runs stay reproducible bit for bit).  Fused SGD in torch 2.14 raises a TypeError
    when some parameters of a group have a momentum buffer and others not yet (a parameter whose first gradient
    comes after the others'): such a parameter gets a zero buffer first, which with dampening 0 makes that step's
    ``buf = momentum * 0 + grad`` the first step's ``buf = grad`` exactly.  The update path stays this
    optimizer's own after ``load_state_dict`` of a checkpoint written with the other one."""

    def __init__(self, params, fused=False, **kwargs):
        fused = fused and not kwargs.get("dampening", 0)
        super().__init__(params, fused=fused or None, foreach=None if fused else True, **kwargs)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["fused"], group["foreach"] = self.defaults["fused"], self.defaults["foreach"]

    def step(self, closure=None):
        for group in self.param_groups:
            if group["fused"] and group["momentum"]:
                for p in group["params"]:
                    if p.grad is not None and self.state[p].get("momentum_buffer") is None:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return super().step(closure)


def load_teacher(path, num_classes, out_stride, default_backbone="resnet101"):
    """The frozen teacher from ``--teacher_path``, built at the student's output stride (so their taps align,
    as the reference does).  Returns ``(teacher, recorded args, CBAM keys its checkpoint lacked)``."""
    if path == DEFAULT_TEACHER and not os.path.isfile(path):
        raise CheckpointError(f"--teacher_path: no teacher at {DEFAULT_TEACHER}; download the AttnFD release's "
                              f"ResNet-101 DeepLabV3+ Pascal VOC checkpoint ({TEACHER_URL}, linked from "
                              f"github.com/AmirMansurian/AttnFD) and save it as {DEFAULT_TEACHER} (see "
                              f"pretrained/README.md), or give --teacher_path a teacher of your own")
    return load_model(path, "--teacher_path", num_classes=num_classes, default_backbone=default_backbone,
                      run_stride=out_stride)


def build_optimizers(model, distiller, lr, momentum, weight_decay, nesterov, cbam_mlp=True, warmup=True,
                     fused=False):
    """The main SGD (backbone at ``lr``, ASPP + decoder at 10x, and the methods' modules that train with the
    student) and, when a method warms up its modules in epoch 0 and ``warmup`` is on, their own SGD for that
    epoch (the AttnFD and Overhaul references; same schedule); ``fused``: the fused update (``SGD``).
    Returns ``(optimizer, warmup_optimizer)``."""
    options = dict(momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, fused=fused)
    groups = model.param_groups(lr, attention_mlp=cbam_mlp)
    warmup = distiller is not None and warmup and distiller.has_warmup
    if distiller is not None:  # the methods' modules that train with the student (all of them without warm-up)
        groups += distiller.param_groups(lr, "student") + ([] if warmup else distiller.param_groups(lr, "late"))
    optimizer = SGD(groups, lr=lr, **options)
    return optimizer, SGD(distiller.param_groups(lr, "warmup"), lr=lr, **options) if warmup else None


def freeze_untrained(net, *optimizers):
    """``requires_grad_(False)`` on every parameter of ``net`` that none of ``optimizers`` holds (the student's CBAM
    MLP under ``--student-cbam-mlp frozen``, BatchNorm affine under ``--freeze-bn``, AttnFD's connectors after
    their warm-up): no gradient is computed, all-reduced or accumulated for them."""
    held = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    for p in net.parameters():
        if id(p) not in held:
            p.requires_grad_(False)
            p.grad = None  # what the warm-up left


def join_student_optimizer(optimizer, distiller, lr):
    """The warm-up-only modules (AttnFD's connectors) join the main optimizer, once: for a run with no warm-up
    epoch in it and no trained connectors to resume (the reference would leave them random for good)."""
    present = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for group in distiller.param_groups(lr, "late"):
        if id(group["params"][0]) not in present:
            optimizer.add_param_group(group)


def class_weights_cache(home, use_sbd):
    """Where the balanced CE weights are cached: the run's folder (the reference kept them in the dataset root,
    which this project never writes); SBD-augmented and plain weights never share a file."""
    return os.path.join(home.directory, f"{home.dataset}{'_sbd' if use_sbd else ''}_classes_weights.npy")


def class_weights(train_set, num_classes, cache):
    """The reference's balanced CE weights (float64 numpy): read from ``cache``, else counted (by every rank: the
    same numbers); ``save_npy`` caches them once the run folder exists."""
    return np.load(cache) if os.path.isfile(cache) else calculate_weights_labels(train_set, num_classes)


def save_npy(path, array):
    with open(path, "wb") as f:
        np.save(f, array)


def for_training(net, world, device, compile_=False):
    """What a training step calls: ``net`` under DDP with several processes (``device``'s GPU, or gloo on CPU),
    then torch.compile'd when asked."""
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)
    return torch.compile(net) if compile_ else net
