"""The one training loop shared by train.py (baseline / teacher) and train_kd.py (distillation).

Faithful to the reference (pytorch-deeplab-xception / AttnFD) where published numbers depend on it:
SGD with a 10x head, poly lr set every iteration, CE divided by the batch size, epoch 0 of
distillation training only the connectors.  See README "Differences from the reference".
"""
import argparse
import json
import math
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import torch
from tqdm import tqdm

from dataloaders import DATASETS, class_names, make_data_loader
from dataloaders.datasets import DatasetError
from distillation import add_args as add_distillation_args
from distillation import build_distiller, teacher_train_mode
from modeling import DeepLab, load_checkpoint, model_from_checkpoint, num_params
from modeling.backbone import BACKBONES
from modeling.imagenet import MissingWeightsError
from mypath import Path
from utils import distributed
from utils.calculate_weights import calculate_weights_labels
from utils.device import Precision, default_workers, fp32
from utils.loss import SegmentationLosses
from utils.lr_scheduler import LRSchedule
from utils.metrics import Evaluator
from utils.saver import CheckpointError, Saver, load_file, write_text_atomic
from utils.summaries import TensorboardSummary

EPOCHS = {"coco": 30, "cityscapes": 200, "pascal": 50, "camvid": 200, "synthetic": 10}
LRS = {"coco": 0.1, "cityscapes": 0.01, "pascal": 0.007, "camvid": 0.01, "synthetic": 0.01}  # per batch of 6
DEFAULT_TEACHER = "pretrained/teacher-pascal.pth.tar"  # the reference's default path
TEACHER_URL = "https://drive.google.com/file/d/1_TM1p38Ev-e-P68YUQGMo7YpkK_-AUFq/view?usp=sharing"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block): 'error: ... (see --help)', exit 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def get_args_parser(kd=False):
    p = ArgumentParser(description="AttnFD: DeepLabV3+ " + ("distillation" if kd else "training"),
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="resnet18" if kd else "resnet101", choices=sorted(BACKBONES))
    p.add_argument("--out-stride", type=int, default=16, choices=[8, 16], help="network output stride")
    p.add_argument("--dataset", default="pascal", choices=DATASETS)
    p.add_argument("--use-sbd", action="store_true", help="add SBD train+val (minus VOC val) to Pascal train")
    p.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                   help="dataloader worker processes (default: this machine's CPUs, at most 8)")
    p.add_argument("--base-size", type=int, default=513, help="base image size of the random scale")
    p.add_argument("--crop-size", type=int, default=513, help="train crop; val short side")
    p.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch under torchrun (nn.SyncBatchNorm on GPUs, "
                        "an all-reduce BatchNorm on CPU); no effect in one process")
    p.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics and affine fixed")
    p.add_argument("--loss-type", default="ce", choices=["ce", "focal"])
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="default per dataset: " + str(EPOCHS))
    p.add_argument("--start_epoch", type=int, default=0, metavar="N")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="the global batch, split evenly across torchrun processes (default 6 per GPU), so the "
                        "default lr rule and every loss are those of one process with this batch")
    p.add_argument("--test-batch-size", type=int, default=None, metavar="N",
                   help="accepted for compatibility; validation uses batch 1 since image sizes differ")
    p.add_argument("--use-balanced-weights", action="store_true", help="class-balanced CE weights (cached .npy)")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="default {dataset lr} / 6 * batch size: " + str(LRS))
    p.add_argument("--lr-scheduler", default="poly", choices=["poly", "step", "cos"])
    p.add_argument("--lr-step", type=int, default=None, help="epochs per 10x decay for --lr-scheduler step "
                                                             "(default epochs // 3)")
    p.add_argument("--momentum", type=float, default=0.9, metavar="M")
    p.add_argument("--weight-decay", type=float, default=5e-4, metavar="M")
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--no-cuda", action="store_true", help="run on the CPU even if CUDA is available")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: bf16 autocast on Ampere+ GPUs and bf16-capable CPUs, fp16 + GradScaler on "
                        "older GPUs; weights, losses and checkpoints stay fp32")
    p.add_argument("--amp-dtype", default="auto", choices=["auto", "bf16", "fp16"], help="override --amp's choice")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions with --amp)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (slow first epoch; pays off on long GPU runs)")
    p.add_argument("--gpu-ids", default="0",
                   help="the GPU of a single-process run; several GPUs: torchrun --nproc_per_node=N (README)")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument("--resume", default=None,
                   help="checkpoint to resume from: weights, optimizer(s), epoch and iteration, RNG states; on CPU the "
                        "resumed run ends with the same weights as an uninterrupted one")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also write the checkpoint every N iterations (atomically), so a killed run loses at most N "
                        "steps; 0: at the end of each epoch only")
    p.add_argument("--checkname", default=None, help="run name (default deeplab-<backbone> / attnfd-<backbone>)")
    p.add_argument("--ft", action="store_true", help="fine-tune: load --resume weights only, start at epoch 0")
    p.add_argument("--eval-interval", type=int, default=1, help="validate every N epochs")
    p.add_argument("--log-interval", type=int, default=10, metavar="N",
                   help="write per-iteration losses to tensorboard every N iterations (one device sync each)")
    p.add_argument("--no-val", action="store_true", help="skip validation")
    p.add_argument("--no-pretrained", action="store_true", help="do not load ImageNet weights into the backbone")
    p.add_argument("--attention-in-path", action="store_true",
                   help="put CBAM in the forward path at the three taps, so its weights train (teacher option)")
    p.add_argument("--full-res-val", action="store_true", help="validate at original resolution (no resize)")
    p.add_argument("--run-dir", default="run", help="root of run/<dataset>/<checkname>/experiment_<k>")
    if kd:
        p.add_argument("--teacher_path", default=DEFAULT_TEACHER)
        p.add_argument("--teacher-backbone", default="resnet101", choices=sorted(BACKBONES),
                       help="used when the teacher checkpoint does not record its backbone")
        add_distillation_args(p)  # each method's weight flag (0 = off) and its hyperparameters
        p.add_argument("--no-warmup", dest="warmup", action="store_false",
                       help="skip the epoch-0 connector warm-up (AttnFD, Overhaul); connectors then train with the "
                            "student")
        p.add_argument("--teacher-train-mode", action=argparse.BooleanOptionalAction, default=None,
                       help="teacher in train mode (batch-statistics BN, decoder dropout), still without autograd; "
                            "--no-teacher-train-mode freezes it in eval mode. Default: train mode when AttnFD or "
                            "Overhaul is on (their references; for AttnFD the README study supports it), else eval")
        p.add_argument("--distill-aspp-dropout", action="store_true",
                       help="keep the ASPP Dropout(0.5) in the distillation forward (the reference's extract_feature "
                            "skips it for teacher and student; plain train.py keeps it)")
        p.add_argument("--student-cbam-mlp", default="train", choices=["train", "frozen"],
                       help="the student's CBAM channel-gate MLP (Linear layers): trained with its part, or frozen "
                            "at init as in the reference, whose optimizer collects only Conv2d/BN parameters")
    return p


def finalize_args(args, kd=False):
    """Reference defaults: epochs and lr per dataset, lr scaled by batch, checkname from backbone."""
    args.kd = kd
    args.cuda = not args.no_cuda and torch.cuda.is_available()
    try:
        args.gpu_ids = [int(s) for s in str(args.gpu_ids).split(",")] if args.gpu_ids != "" else [0]
    except ValueError:
        raise SystemExit(f"error: --gpu-ids must be a comma-separated list of integers, got {args.gpu_ids!r}") from None
    distributed.init(args.cuda)
    world = distributed.world_size()
    if len(args.gpu_ids) > 1 and world == 1:
        raise SystemExit(f"error: --gpu-ids {','.join(map(str, args.gpu_ids))}: several GPUs run as one process each: "
                         f"torchrun --nproc_per_node={len(args.gpu_ids)} {os.path.basename(sys.argv[0])} ... "
                         "(CUDA_VISIBLE_DEVICES picks the GPUs)")
    absent = [g for g in args.gpu_ids if g >= torch.cuda.device_count()]
    if world == 1 and not args.no_cuda and absent and args.gpu_ids != [0]:
        raise SystemExit(f"error: --gpu-ids {','.join(map(str, absent))}: this machine has {torch.cuda.device_count()} "
                         "GPU(s) (ids from 0); pick one of them or pass --no-cuda")
    n_gpu = world if args.cuda else 1
    if args.epochs is None:
        args.epochs = EPOCHS[args.dataset]
    if args.batch_size is None:
        args.batch_size = 6 * n_gpu
    if args.test_batch_size is None:
        args.test_batch_size = args.batch_size
    if args.lr is None:
        args.lr = LRS[args.dataset] / (6 * n_gpu) * args.batch_size
    if args.checkname is None:
        args.checkname = ("attnfd-" if kd else "deeplab-") + args.backbone
    if args.save_every < 0:
        raise SystemExit("error: --save-every must be 0 (epoch ends only) or a positive number of iterations")
    if min(args.epochs, args.batch_size, args.eval_interval, args.log_interval) < 1:
        raise SystemExit("error: --epochs, --batch-size, --eval-interval and --log-interval must be positive")
    if args.crop_size < 2 * args.out_stride:
        raise SystemExit(f"error: --crop-size {args.crop_size} is too small for --out-stride {args.out_stride}: the "
                         f"deepest features would be under 2x2; use at least {2 * args.out_stride}")
    if args.batch_size % world:
        raise SystemExit(f"error: --batch-size {args.batch_size} is the global batch and must split evenly across "
                         f"{world} processes")
    return args


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights_cache(dataset, use_sbd, root, run_dir):
    """Where the balanced CE weights are cached: beside the dataset, or in the run root when that is not
    writable; SBD-augmented and plain weights never share a file."""
    name = f"{dataset}{'_sbd' if use_sbd else ''}_classes_weights.npy"
    return os.path.join(root if os.access(os.path.abspath(root), os.W_OK) else run_dir, name)


def sgd(params, **kwargs):
    """torch.optim.SGD with the multi-tensor (foreach) update, also on CPU where it is not the default:
    the same update, a few kernels for all parameters instead of several per tensor (ResNet-101 step at
    64 px: -14%).  Not ``fused=True``: in torch 2.14 fused SGD fails on a parameter whose first gradient
    comes after the others' (TypeError on its missing momentum buffer) and goes NaN on CPU under the fp16
    GradScaler."""
    return torch.optim.SGD(params, foreach=True, **kwargs)


def train_step(net, criterion, optimizer, precision, image, target, sync_grads=(), **kwargs):
    """One optimisation step of a model (``net(image) -> logits``) or a distiller (``-> (logits, terms)``).

    The forward runs under ``precision``'s autocast; the CE and every distillation term are fp32 and are
    losses of the global batch (identical on every rank).  ``sync_grads``: parameters whose gradients are
    averaged over ranks by hand, for a ``net`` not wrapped in DDP (the warm-up epoch).
    Returns the detached loss values to log, without a host sync.
    """
    with precision.autocast():
        out = net(image, **kwargs)
    logits, terms = out if isinstance(out, tuple) else (out, {})
    terms = {k: fp32(v) for k, v in terms.items()}
    ce = criterion(fp32(logits), target)
    distill = sum(terms.values())
    loss = ce + distill
    optimizer.zero_grad(set_to_none=True)
    precision.backward_step(loss, optimizer, sync_grads)
    logged = {"total_loss_iter": loss, "ce": ce, **terms}
    if terms:
        logged["distill/total"] = distill
    return {k: v.detach() for k, v in logged.items()}


class Trainer:
    def __init__(self, args):
        self.args = args
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.log = print if self.main else (lambda *a, **k: None)
        seed_everything(args.seed)  # the same initial weights on every rank
        local = distributed.local_rank() if self.world > 1 else args.gpu_ids[0]
        self.device = torch.device(f"cuda:{local}" if args.cuda else "cpu")
        self.precision = Precision(self.device, args.amp, args.amp_dtype, args.channels_last)
        resume = load_file(args.resume, "--resume") if args.resume else None

        kwargs = {"num_workers": args.workers, "pin_memory": args.cuda,
                  "generator": torch.Generator().manual_seed(args.seed + self.rank)}
        if args.workers > 0:
            kwargs.update(persistent_workers=True, prefetch_factor=4)
        self.train_loader, self.val_loader, self.test_loader, self.nclass = make_data_loader(
            args, batch_size=args.batch_size // self.world, shard=self.world > 1, **kwargs)
        if len(self.train_loader.sampler) < args.batch_size // self.world:
            raise DatasetError(f"--batch-size {args.batch_size}: the train split has only "
                               f"{len(self.train_loader.dataset)} images" + (f" ({len(self.train_loader.sampler)} per "
                               f"process)" if self.world > 1 else "") + "; use a smaller --batch-size")
        self.class_names = class_names(args.dataset)

        self.model = DeepLab(num_classes=self.nclass, backbone=args.backbone, output_stride=args.out_stride,
                             pretrained_backbone=not args.no_pretrained,
                             attention_in_path=args.attention_in_path, freeze_bn=args.freeze_bn)
        self.distiller = self._build_distiller() if args.kd else None
        self.net = self.distiller if self.distiller is not None else self.model
        if args.sync_bn and self.world > 1:
            distributed.convert_sync_batchnorm(self.net, args.cuda)  # teacher too: its train-mode BN statistics
        elif args.sync_bn:
            self.log("note: --sync-bn has no effect in a single process (it applies under torchrun)")
        self.precision.prepare(self.net)
        self._wrapped = None  # DDP (and torch.compile) wrapper, built at the first non-warm-up step
        seed_everything(args.seed + self.rank)  # per-rank dropout (augmentation is seeded per sample)
        self.log(f"Precision: {self.precision.describe()}" + (", torch.compile" if args.compile else "")
                 + (f"; {self.world} processes (DDP, {'NCCL' if args.cuda else 'gloo'}), global batch "
                    f"{args.batch_size} = {self.world} x {args.batch_size // self.world}" if self.world > 1 else ""))

        opt = dict(momentum=args.momentum, weight_decay=args.weight_decay, nesterov=args.nesterov)
        groups = self.model.param_groups(args.lr, attention_mlp=not (args.kd and args.student_cbam_mlp == "frozen"))
        warmup = self.distiller is not None and args.warmup and self.distiller.has_warmup
        if self.distiller is not None:  # the methods' connectors that train with the student (all, without warm-up)
            groups += self.distiller.param_groups(args.lr, "student")
            if not warmup:
                groups += self.distiller.param_groups(args.lr, "late")
        self.optimizer = sgd(groups, lr=args.lr, **opt)
        # references (AttnFD, Overhaul): epoch 0 trains only the connectors, with their own SGD, same schedule
        self.warmup_optimizer = sgd(self.distiller.param_groups(args.lr, "warmup"), lr=args.lr, **opt) \
            if warmup else None

        weight = None
        if args.use_balanced_weights:
            cache = class_weights_cache(args.dataset, args.use_sbd, Path.db_root_dir(args.dataset), args.run_dir)
            if not self.main:
                distributed.barrier()  # rank 0 computes and caches the weights; the others then read the cache
            weight = torch.from_numpy(calculate_weights_labels(self.train_loader.dataset, self.nclass, cache)).float()
            if self.main:
                distributed.barrier()
        self.criterion = SegmentationLosses(weight=weight).build_loss(mode=args.loss_type)
        self.val_criterion = SegmentationLosses(weight=weight, over_ranks=False).build_loss(mode=args.loss_type)
        self.evaluator = Evaluator(self.nclass, self.device)
        self.schedule = LRSchedule(args.lr_scheduler, args.epochs, len(self.train_loader), args.lr_step)
        self.best_pred, self.history = 0.0, []
        self.connectors_loaded, self.start_iteration, self.partial, self.resumed_rng = False, 0, None, None
        self.stop_signal = None
        if resume is not None:
            self._resume(resume)
        if self.warmup_optimizer is not None and args.start_epoch > 0 and not self.connectors_loaded:
            # no warm-up epoch in this run and no trained connectors to resume: they train with the student
            # (the reference would leave them random for good)
            self._connectors_train_with_student()
            self.log(f"note: the run starts at epoch {args.start_epoch}, past the connector warm-up, without "
                     "trained connectors: they train with the student")

        # Nothing is written before this point: bad input leaves no half-made run behind.  Only rank 0 writes.
        experiment_dir = None
        if args.resume and not args.ft and os.path.basename(os.path.dirname(os.path.abspath(args.resume))) \
                .startswith("experiment_"):
            experiment_dir = os.path.dirname(os.path.abspath(args.resume))  # continue that experiment
        self.saver = self.summary = None
        self.writer = NullWriter()
        if self.main:
            self.saver = Saver(args, experiment_dir)
            self.saver.save_experiment_config()
            self.summary = TensorboardSummary(self.saver.experiment_dir)
            self.writer = self.summary.create_summary()
        if self.resumed_rng is not None:
            set_rng_state(self.resumed_rng)  # the resumed run draws the dropout masks the interrupted one would have
        self.log(f"Student DeepLab({args.backbone}): {num_params(self.model) / 1e6:.2f}M parameters "
                 f"({num_params(self.model, attention=False) / 1e6:.2f}M without CBAM)")

    def _build_distiller(self):
        args = self.args
        if args.teacher_path == DEFAULT_TEACHER and not os.path.isfile(args.teacher_path):
            raise CheckpointError(f"--teacher_path: no teacher at {DEFAULT_TEACHER}; download the AttnFD release's "
                                  f"ResNet-101 DeepLabV3+ Pascal VOC checkpoint ({TEACHER_URL}, linked from "
                                  f"github.com/AmirMansurian/AttnFD) and save it as {DEFAULT_TEACHER} (see "
                                  f"pretrained/README.md), or give --teacher_path a teacher of your own")
        ckpt = load_file(args.teacher_path, "--teacher_path")
        try:
            self.teacher, missing, saved = model_from_checkpoint(ckpt, output_stride=args.out_stride,
                                                                 num_classes=self.nclass,
                                                                 default_backbone=args.teacher_backbone)
        except ValueError as e:
            raise CheckpointError(f"--teacher_path {args.teacher_path}: {e}") from None
        try:
            distiller = build_distiller(self.model, self.teacher, args, missing_attention=missing)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        if saved.get("out_stride", args.out_stride) != args.out_stride:
            self.log(f"note: the teacher was trained at output stride {saved['out_stride']}; it runs at the student's "
                     f"--out-stride {args.out_stride} so that their taps align (the reference does the same)")
        _, why = teacher_train_mode(args)
        teacher_mode = ("train (batch-statistics BN, dropout; no autograd)" if distiller.teacher_train_mode
                        else "eval (frozen)")
        self.log(f"Teacher DeepLab({self.teacher.backbone_name}) from {args.teacher_path}: "
                 f"{num_params(self.teacher) / 1e6:.2f}M parameters; teacher mode: {teacher_mode} ({why})")
        for line in distiller.notes():
            self.log("Distillation: " + line)
        return distiller

    def _resume(self, ckpt):
        args = self.args
        saved = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
        if not args.ft and saved.get("dataset", args.dataset) != args.dataset:
            raise CheckpointError(f"--resume {args.resume} was trained on {saved['dataset']}, not --dataset "
                                  f"{args.dataset}; resume on {saved['dataset']}, or start from its weights with --ft")
        try:
            load_checkpoint(self.model, ckpt)
        except ValueError as e:
            raise CheckpointError(f"--resume {args.resume}: {e}") from None
        if args.ft:
            args.start_epoch = 0
            self.log(f"Fine-tuning from {args.resume} (weights only)")
            return
        if "optimizer" in ckpt:
            if self.distiller is not None and len(ckpt["optimizer"].get("param_groups", [])) > \
                    len(self.optimizer.param_groups):  # saved after the warm-up-only connectors joined the student
                self._connectors_train_with_student()
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.distiller is not None and "connectors" in ckpt:
            try:
                self.distiller.load_trainable(ckpt["connectors"])
            except RuntimeError:
                raise CheckpointError(f"--resume {args.resume}: its connectors belong to other distillation methods "
                                      f"than this run's; resume with the same method flags") from None
            self.connectors_loaded = True
            if self.warmup_optimizer is not None and "warmup_optimizer" in ckpt:
                self.warmup_optimizer.load_state_dict(ckpt["warmup_optimizer"])
        args.start_epoch = int(ckpt.get("epoch", 0))
        self.start_iteration = int(ckpt.get("iteration", 0))
        self.partial = ckpt.get("partial")
        self.best_pred = float(ckpt.get("best_pred", 0.0))
        self.history = list(ckpt.get("history", []))
        self.resumed_rng = ckpt.get("rng")
        if "scaler" in ckpt and self.precision.scaler.is_enabled():
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        where = f"epoch {args.start_epoch}" + (f", iteration {self.start_iteration}" if self.start_iteration else "")
        self.log(f"Resumed {args.resume} at {where} (best mIoU {self.best_pred:.4f})")

    def _connectors_train_with_student(self):
        """The warm-up-only connectors (AttnFD's) join the main optimizer, once."""
        present = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        for group in self.distiller.param_groups(self.args.lr, "late"):
            if id(group["params"][0]) not in present:
                self.optimizer.add_param_group(group)

    def train_net(self, warmup):
        """What a training step calls: the distiller/model, under DDP with several processes (the warm-up
        epoch, where only the connectors learn, runs it unwrapped and averages their gradients by hand)."""
        if warmup:
            return self.net
        if self._wrapped is None:
            net = self.net
            if self.world > 1:
                net = torch.nn.parallel.DistributedDataParallel(
                    net, device_ids=[self.device.index] if self.args.cuda else None, static_graph=True)
            self._wrapped = torch.compile(net) if self.args.compile else net
        return self._wrapped

    def training(self, epoch, start=0, partial=None):
        """One epoch from iteration ``start`` (a resumed epoch); ``partial``: (totals, n) of its first part."""
        args = self.args
        warmup = self.warmup_optimizer is not None and epoch == 0
        optimizer = self.warmup_optimizer if warmup else self.optimizer
        net = self.train_net(warmup)
        sync = [p for g in optimizer.param_groups for p in g["params"]] if warmup and self.world > 1 else ()
        self.train_loader.sampler.set_epoch(epoch, start)
        iters = self.schedule.iters_per_epoch
        self.net.train()
        totals, n = (dict(partial[0]), partial[1]) if partial else ({}, 0)
        pending, data_wait, done = [], 0.0, 0
        begin = time.perf_counter()
        tbar = tqdm(self.train_loader, desc="Train", dynamic_ncols=True, disable=not self.main)
        tick = time.perf_counter()
        for i, sample in enumerate(tbar, start):
            data_wait += time.perf_counter() - tick
            lr = self.schedule(optimizer, i, epoch)
            image = self.precision.images(sample["image"])
            target = sample["label"].to(self.device, non_blocking=True)
            kwargs = {"warmup": warmup} if self.distiller is not None else {}
            logged = train_step(net, self.criterion, optimizer, self.precision, image, target, sync, **kwargs)
            pending.append((epoch, i, lr, logged))
            n, done = n + 1, done + 1
            last = i == iters - 1
            save = args.save_every and (i + 1) % args.save_every == 0 and not last
            if len(pending) == args.log_interval or last or save or self.stop_signal:
                self._log(pending, totals)  # the one host sync every --log-interval steps; stops on NaN/inf
                pending = []
            if self.main and not pending:
                tbar.set_description(f"Train loss: {totals['total_loss_iter'] / n:.3f}"
                                     + (" (warm-up)" if warmup else ""))
            if (save or self.stop_signal) and not last:
                path = self.save(self.state(epoch, iteration=i + 1, partial=(totals, n)))
                if self.stop_signal:
                    self.log(f"Stopped by {self.stop_signal.name} at epoch {epoch}, iteration {i + 1}; checkpoint "
                             f"{path}. Resume with: --resume {path}")
                    raise SystemExit(128 + self.stop_signal.value)
            tick = time.perf_counter()
        seconds = time.perf_counter() - begin
        means = {k: v / max(n, 1) for k, v in totals.items()}
        means["images_per_s"] = done * args.batch_size / seconds  # global batch: images/s of all processes
        means["data_wait"] = data_wait / seconds
        self.writer.add_scalar("train/total_loss_epoch", means.get("total_loss_iter", 0.0), epoch)
        self.writer.add_scalar("train/images_per_s", means["images_per_s"], epoch)
        self.log(f"[Epoch: {epoch}, numImages: {n * args.batch_size:5d}] Loss: {totals.get('total_loss_iter', 0.0):.3f}"
                 f" ({means['images_per_s']:.1f} images/s, {100 * means['data_wait']:.0f}% waiting for data)"
                 + (" (warm-up: connectors only)" if warmup else ""))
        return means

    def _log(self, pending, totals):
        """Losses are global-batch values, the same on every rank, so every rank sees a non-finite one
        and stops; rank 0 writes them."""
        values = torch.stack([torch.stack(list(logged.values())) for *_, logged in pending]).tolist()
        for (epoch, i, lr, logged), row in zip(pending, values):
            if not all(math.isfinite(v) for v in row):
                raise TrainingError(f"non-finite loss at epoch {epoch}, iteration {i} "
                                    f"({', '.join(f'{k}={v}' for k, v in zip(logged, row))}); nothing was saved after "
                                    f"the last good checkpoint; try a lower --lr, or drop --amp-dtype fp16")
            if not self.main:
                continue
            step = epoch * self.schedule.iters_per_epoch + i
            for k, v in zip(logged, row):
                totals[k] = totals.get(k, 0.0) + v
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/lr", lr, step)

    @torch.no_grad()
    def validation(self, epoch):
        """Each rank evaluates its shard of the val set; the confusion matrices and losses are summed, so
        the metrics equal a single-process evaluation."""
        self.model.eval()
        self.evaluator.reset()
        test_loss, n = torch.zeros((), dtype=torch.float64, device=self.device), 0
        tbar = tqdm(self.val_loader, desc="Val", dynamic_ncols=True, disable=not self.main)
        first = None
        for sample in tbar:
            image = self.precision.images(sample["image"])
            target = sample["label"].to(self.device)
            with self.precision.autocast():
                output = self.model(image)
            output = fp32(output)
            test_loss += self.val_criterion(output, target)
            n += 1
            self.evaluator.add_batch(target, output.argmax(dim=1))
            if first is None:
                first = (image, target, output)
        self.evaluator.all_reduce()
        test_loss = float(distributed.sum_over_ranks(test_loss))
        n = int(distributed.sum_over_ranks(torch.tensor(n, device=self.device)))
        r = self.evaluator.results()
        r["loss"] = test_loss
        if not self.main:
            return r
        for k in ("mIoU", "Acc", "Acc_class", "fwIoU"):
            self.writer.add_scalar(f"val/{k}", r[k], epoch)
        self.writer.add_scalar("val/total_loss_epoch", test_loss, epoch)
        for name, iou in zip(self.class_names, r["IoU"]):
            if iou is not None:
                self.writer.add_scalar(f"val/IoU/{name}", iou, epoch)
        if first is not None:
            self.summary.visualize_image(self.writer, self.args.dataset, *first, epoch,
                                         png_dir=os.path.join(self.saver.experiment_dir, "vis"))
        print(f"Validation: [Epoch: {epoch}, numImages: {n:5d}]")
        print(f"Acc:{r['Acc']:.4f}, Acc_class:{r['Acc_class']:.4f}, mIoU:{r['mIoU']:.4f}, fwIoU: {r['fwIoU']:.4f}")
        print("Per-class IoU: " + ", ".join(f"{c}={'n/a' if v is None else f'{v:.3f}'}"
                                           for c, v in zip(self.class_names, r["IoU"])))
        return r

    def state(self, epoch, iteration=0, partial=None):
        """Everything a run needs to go on exactly: at the end of ``epoch`` or, with ``iteration``, after
        that many iterations of it (``epoch`` is then the one to finish)."""
        s = {"epoch": epoch if iteration else epoch + 1, "iteration": iteration, "state_dict": self.model.state_dict(),
             "optimizer": self.optimizer.state_dict(), "best_pred": self.best_pred,
             "args": {k: v for k, v in vars(self.args).items()}, "history": self.history, "rng": get_rng_state()}
        if partial is not None:
            s["partial"] = partial
        if self.precision.scaler.is_enabled():
            s["scaler"] = self.precision.scaler.state_dict()
        if self.distiller is not None:
            s["connectors"] = self.distiller.trainable_modules().state_dict()
            if self.warmup_optimizer is not None:
                s["warmup_optimizer"] = self.warmup_optimizer.state_dict()
        return s

    def save(self, state, is_best=False):
        """Rank 0 writes the checkpoint (atomically) and history.json; returns the checkpoint's path."""
        if not self.main:
            return None
        path = self.saver.save_checkpoint(state, is_best)
        write_text_atomic(os.path.join(self.saver.experiment_dir, "history.json"), json.dumps(self.history, indent=1))
        return path

    def _on_signal(self, signum, frame):
        """SIGINT/SIGTERM: finish the step in flight, save, exit (a second one acts at once)."""
        self.stop_signal = signal.Signals(signum)
        signal.signal(signum, signal.SIG_DFL)
        self.log(f"\n{self.stop_signal.name}: finishing this step, then saving (again to stop at once)")

    def fit(self):
        args = self.args
        self.log(f"Starting Epoch: {args.start_epoch}\nTotal Epoches: {args.epochs}")
        start = time.time()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._epochs()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self.writer.close()
        self.elapsed = time.time() - start
        self.log(f"Best mIoU {self.best_pred:.4f}; run directory {self.saver.experiment_dir if self.main else ''}")
        return self.best_pred

    def _epochs(self):
        args = self.args
        for epoch in range(args.start_epoch, args.epochs):
            start, partial = (self.start_iteration, self.partial) if epoch == args.start_epoch else (0, None)
            train = self.training(epoch, start, partial)
            record = {"epoch": epoch, "train": train}
            is_best = False
            if not args.no_val and epoch % args.eval_interval == args.eval_interval - 1:
                val = self.validation(epoch)
                record["val"] = val
                first = not any("val" in h for h in self.history)  # a first model_best even at mIoU 0
                if val["mIoU"] > self.best_pred or first:
                    self.best_pred, is_best = val["mIoU"], True
            self.history.append(record)
            path = self.save(self.state(epoch), is_best)
            if self.stop_signal and epoch < args.epochs - 1:
                self.log(f"Stopped by {self.stop_signal.name} after epoch {epoch}; resume with: --resume {path}")
                raise SystemExit(128 + self.stop_signal.value)


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss); the message says where and what to try."""


def get_rng_state():
    """Python, NumPy, torch CPU and CUDA generator states, in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                    *np_state[2:]), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class NullWriter:
    """The tensorboard writer of ranks other than 0: they write nothing."""

    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


def one_line(e):
    """The last meaningful line of an error (DataLoader workers wrap the original in a traceback)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else type(e).__name__
    for prefix in ("dataloaders.datasets.base.DatasetError: ", "DatasetError: "):
        line = line.removeprefix(prefix)
    return line


def main(args, kd=False):
    args = finalize_args(args, kd)
    try:
        trainer = Trainer(args)
        trainer.fit()
    except (DatasetError, CheckpointError, MissingWeightsError, TrainingError) as e:
        where = f" (rank {distributed.rank()})" if distributed.world_size() > 1 else ""
        print(f"error: {one_line(e)}{where}", file=sys.stderr)  # torchrun then stops the other ranks
        sys.exit(2)
    finally:
        distributed.cleanup()
    return trainer
