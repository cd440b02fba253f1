"""``main(args, kd)``: the one training run behind train.py (baseline / teacher) and train_kd.py (distillation).

Faithful to the reference (pytorch-deeplab-xception / AttnFD) where published numbers depend on it: SGD with a
10x head, poly lr set every iteration, CE divided by the batch size, epoch 0 of distillation training only the
connectors (docs/reference.md).  Only this module reads the argparse namespace: ``setup`` hands values to the
builders, ``fit`` runs the epochs with the free functions of ``loop`` and keeps the ``RunState``.
"""
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch

from dataloaders import build_loaders, class_names
from dataloaders.images import InputError
from distillation import LabelAssistedTeacher, build_distiller, settings_from_args, teacher_train_mode
from modeling import DeepLab, num_params
from modeling.imagenet import MissingWeightsError
from utils import distributed
from utils.cli import UsageError, one_line_errors, stop_signals
from utils.device import Precision
from utils.inference import evaluate
from utils.loss import SegmentationLosses
from utils.lr_scheduler import LRSchedule
from utils.outputs import Outputs
from utils.saver import CheckpointError, Saver, load_file
from utils.summaries import TensorboardSummary

from . import build
from .args import get_args_parser, resolve_args
from .loop import NullWriter, StopRequest, TrainingError, log_validation, train_one_epoch
from .state import RunState, get_rng_state, make_checkpoint, resume, run_home, set_rng_state


@dataclass
class Run:
    """A run's parts, as ``setup`` builds them; ``main`` returns it trained (demo.py and the tests read it)."""
    args: object
    device: torch.device
    precision: Precision
    train_loader: object
    val_loader: object
    model: DeepLab                 # the network being trained (train.py's model, train_kd.py's student)
    distiller: object              # train_kd.py: student + teacher + methods; None in train.py
    label_assisted: object         # train.py --label-assisted: the model's two-path training (LAD's teacher)
    optimizer: object
    warmup_optimizer: object       # the methods' modules alone in epoch 0, when a method warms up
    criterion: object
    val_criterion: object
    schedule: LRSchedule
    state: RunState
    saver: Saver = None            # rank 0 only, as the writer
    summary: TensorboardSummary = None
    writer: object = None
    seconds: float = 0.0

    @property
    def experiment_dir(self):
        return self.saver.experiment_dir if self.saver else None


def main(args, kd=False):
    """Start the process group (torchrun/SLURM), train, clean up; a known error is one line and exit status 2."""
    cuda = not args.no_cuda and torch.cuda.is_available()
    distributed.init(cuda)
    where = lambda: f" (rank {distributed.rank()})" if distributed.world_size() > 1 else ""  # noqa: E731
    run = None
    try:  # torchrun stops the other ranks when one exits with an error
        with one_line_errors(InputError, CheckpointError, MissingWeightsError, TrainingError, where=where):
            run = setup(resolve_args(args, kd, distributed.world_size(), cuda, torch.cuda.device_count()))
            return fit(run)
    except KeyboardInterrupt:  # before the run's signal handlers are installed (while it starts)
        print("Stopped by SIGINT before the first checkpoint; nothing was saved", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    finally:
        with stop_signals(signal.SIG_IGN):  # a further Ctrl-C does not cut the cleanup short
            if run is not None and run.saver is not None:
                run.saver.discard()  # only when no checkpoint was written: nothing half-made stays behind
            distributed.cleanup()


def setup(args):
    """Every part of the run, built in the order that fixes the initial weights and RNG streams; nothing is
    written before the run folder at the end, so bad input leaves no half-made run behind."""
    rank, world = distributed.rank(), distributed.world_size()
    log = print if rank == 0 else (lambda *a, **k: None)
    build.seed_everything(args.seed)  # the same initial weights on every rank
    device = torch.device(f"cuda:{distributed.local_rank() if world > 1 else args.gpu_ids[0]}" if args.cuda else "cpu")
    precision = Precision(device, args.amp, args.amp_dtype, args.channels_last)
    checkpoint = load_file(args.resume, "--resume") if args.resume else None
    home = run_home(args, checkpoint, log)
    args.run_dir, args.checkname = home.run_dir, home.checkname
    outputs = Outputs.from_args(get_args_parser(args.kd), args, "train_kd.py" if args.kd else "train.py",
                                skip=() if args.ft else ("resume",))  # a resumed run's checkpoint is its own
    outputs.writes_run("--run-dir", home.directory, replaces=[os.path.join(home.directory, "model_best.pth.tar")])
    outputs.check()
    options = {"num_workers": args.workers, "pin_memory": args.cuda,
               "generator": torch.Generator().manual_seed(args.seed + rank)}
    if args.workers > 0:
        options.update(persistent_workers=True, prefetch_factor=4)
    train_loader, val_loader, num_classes = build_loaders(
        args.dataset, args.batch_size // world, args.base_size, args.crop_size, args.full_res_val, args.use_sbd,
        args.seed, rank, world, val=not args.no_val, **options)
    if args.iterations is not None:  # the epochs that hold them, the last one cut short
        args.epochs = -(-args.iterations // len(train_loader))
        if args.start_epoch >= args.epochs:
            raise UsageError(f"--start_epoch {args.start_epoch} with --iterations {args.iterations} "
                             f"({args.epochs} epochs of {len(train_loader)}): nothing to train")
    model = DeepLab(num_classes, args.backbone, args.out_stride, pretrained_backbone=not args.no_pretrained,
                    attention_in_path=args.attention_in_path, freeze_bn=args.freeze_bn,
                    label_channel=args.label_assisted)
    distiller = distill(args, model, num_classes, log) if args.kd else None
    if distiller is not None and args.compile_methods:
        distiller.compile_methods()
    if args.sync_bn and world > 1:
        distributed.convert_sync_batchnorm(distiller or model, args.cuda)  # teacher too: train-mode BN statistics
    elif args.sync_bn:
        log("note: --sync-bn has no effect in a single process (it applies under torchrun)")
    precision.prepare(distiller or model)
    build.seed_everything(args.seed + rank)  # per-rank dropout (augmentation is seeded per sample)
    log(f"Precision: {precision.describe()}" + (", torch.compile" if args.compile else "")
        + (f"; {world} processes (DDP, {'NCCL' if args.cuda else 'gloo'}), global batch {args.batch_size} = "
           f"{world} x {args.batch_size // world}" if world > 1 else ""))

    optimizer, warmup_optimizer = build.build_optimizers(
        model, distiller, args.lr, args.momentum, args.weight_decay, args.nesterov,
        cbam_mlp=not (args.kd and args.student_cbam_mlp == "frozen"), warmup=args.kd and args.warmup,
        fused=args.fused_sgd and not (device.type == "cpu" and precision.scaler.is_enabled()))  # NaN there
    weights, cache = None, build.class_weights_cache(home, args.use_sbd)
    if args.use_balanced_weights:
        weights = build.class_weights(train_loader.dataset, num_classes, cache)
    weight = None if weights is None else torch.from_numpy(weights).float()
    criterion = SegmentationLosses(weight=weight).build_loss(mode=args.loss_type)
    run = Run(args, device, precision, train_loader, val_loader, model, distiller,
              LabelAssistedTeacher(model, criterion) if args.label_assisted else None, optimizer, warmup_optimizer,
              criterion,
              SegmentationLosses(weight=weight, over_ranks=False).build_loss(mode=args.loss_type),
              LRSchedule(args.lr_scheduler, args.epochs, len(train_loader), args.lr_step, args.iterations),
              RunState(args.start_epoch))
    join = lambda: build.join_student_optimizer(optimizer, distiller, args.lr)  # noqa: E731
    connectors_loaded = False
    if checkpoint is not None:
        run.state, connectors_loaded, missing = resume(
            checkpoint, args.resume, model, args.dataset, args.ft, optimizer, warmup_optimizer, distiller,
            precision.scaler, join, args.kd, list(settings_from_args(args)) if args.kd else [], args.batch_size,
            rank, world)
        if missing:
            log(f"note: --resume {args.resume} has no CBAM weights ({len(missing)} keys, the pytorch-deeplab-xception "
                "format): the model's CBAM modules keep their initial values")
        where = f"epoch {run.state.epoch}" + (f", iteration {run.state.iteration}" if run.state.iteration else "")
        if run.state.epoch >= args.epochs:
            raise UsageError(f"--resume {args.resume} is at {where}, --epochs {args.epochs}: nothing is left to "
                             f"train; raise --epochs to continue it")
        log(f"Fine-tuning from {args.resume} (weights only)" if args.ft else
            f"Resumed {args.resume} at {where} (best mIoU {run.state.best_pred:.4f})")
    if warmup_optimizer is not None and run.state.epoch > 0 and not connectors_loaded:
        join()  # no warm-up epoch in this run and no trained connectors to resume
        log(f"note: the run starts at epoch {run.state.epoch}, past the connector warm-up, without trained "
            "connectors: they train with the student")
    build.freeze_untrained(distiller or model, optimizer, *[warmup_optimizer] * (warmup_optimizer is not None))

    run.writer = NullWriter()
    if rank == 0:  # only rank 0 writes
        run.saver = Saver(home, outputs)
        try:
            run.saver.save_experiment_config(vars(args))
            if weights is not None and not os.path.isfile(cache):
                outputs.write_with(cache, lambda tmp: build.save_npy(tmp, weights))
            run.summary = TensorboardSummary(run.saver.experiment_dir, outputs)
            run.writer = run.summary.create_summary()
        except BaseException:
            run.saver.discard()
            raise
    if run.state.rng is not None:
        set_rng_state(run.state.rng)  # the resumed run draws the dropout masks the interrupted one would have
    log(f"Student DeepLab({args.backbone}): {num_params(model) / 1e6:.2f}M parameters "
        f"({num_params(model, attention=False) / 1e6:.2f}M without CBAM)")
    return run


def distill(args, student, num_classes, log):
    """The teacher of ``--teacher_path`` and the Distiller of the methods whose weight flag is not 0."""
    teacher, saved, missing = build.load_teacher(args.teacher_path, num_classes, args.out_stride,
                                                 args.teacher_backbone)
    methods = settings_from_args(args)
    train_mode, why = teacher_train_mode(args.teacher_train_mode, methods)
    try:
        distiller = build_distiller(student, teacher, methods, train_mode, args.distill_aspp_dropout, missing,
                                    args.dataset)
    except ValueError as e:
        raise TrainingError(str(e).replace("the teacher checkpoint", args.teacher_path)) from None
    if saved.get("out_stride", args.out_stride) != args.out_stride:
        log(f"note: the teacher was trained at output stride {saved['out_stride']}; it runs at the student's "
            f"--out-stride {args.out_stride} so that their taps align (the reference does the same)")
    mode = "train (batch-statistics BN, dropout; no autograd)" if train_mode else "eval (frozen)"
    log(f"Teacher DeepLab({teacher.backbone_name}) from {args.teacher_path}: {num_params(teacher) / 1e6:.2f}M "
        f"parameters; teacher mode: {mode} ({why})" + ("; label-assisted: its 4th input channel gets the "
                                                          "labels' fixed encoding" if teacher.label_channel else ""))
    for line in distiller.notes():
        log("Distillation: " + line)
    return distiller


def fit(run):
    """The epochs from ``run.state`` on: train, validate every ``--eval-interval``, save; SIGINT/SIGTERM save and
    stop cleanly."""
    args, state, main_rank, world = run.args, run.state, distributed.rank() == 0, distributed.world_size()
    log = print if main_rank else (lambda *a, **k: None)
    net, ddp, names = run.distiller or run.label_assisted or run.model, None, class_names(args.dataset)
    label_input = run.label_assisted.validation_input if run.label_assisted else None
    stop = StopRequest(log, run.device)

    def save(at, is_best=False):
        """Rank 0 writes the checkpoint (atomically) and history.json; returns the checkpoint's path.  Every rank
        calls it: each one's RNG states go into the checkpoint."""
        rng = distributed.gather(get_rng_state())
        if run.saver is None:
            return None
        path = run.saver.save_checkpoint(make_checkpoint(at, run.model, run.optimizer, vars(args), run.precision.scaler,
                                                         run.distiller, run.warmup_optimizer, rng, run.saver.home),
                                         is_best)
        run.saver.write_text("history.json", json.dumps(at.history, indent=1))
        return path

    flops = {}  # FLOPs of a step, per phase (warm-up or not): counted in its first epoch, the same after
    log(f"Starting Epoch: {state.epoch}\nTotal Epoches: {args.epochs}"
        + (f" ({args.iterations} iterations)" if args.iterations is not None else ""))
    start = time.time()
    with stop.installed():
        for epoch in range(state.epoch, args.epochs):
            warmup = run.warmup_optimizer is not None and epoch == 0
            if not warmup and ddp is None:
                build.freeze_untrained(net, run.optimizer)  # the warm-up-only modules are done
                ddp = build.for_training(net, world, run.device, args.compile)  # at the student's first step
            optimizer = run.warmup_optimizer if warmup else run.optimizer
            sync = [p for g in optimizer.param_groups for p in g["params"]] if warmup and world > 1 else ()
            train = train_one_epoch(  # from state.iteration: a resumed epoch
                net if warmup else ddp, run.train_loader, run.criterion, optimizer, run.schedule, run.precision, epoch,
                state.iteration, state.partial, None if run.distiller is None else warmup, sync, args.log_interval,
                args.save_every, run.writer, main_rank, stop, lambda i, partial, e=epoch: save(state.at(e, i, partial)),
                log, count_flops=not args.compile and warmup not in flops)  # once a phase; not in compiled graphs
            flops.setdefault(warmup, train.get("flops_per_iteration"))
            if flops[warmup] is not None:
                train["flops_per_iteration"] = flops[warmup]
            record, is_best = {"epoch": epoch, "train": train}, False
            last = epoch == args.epochs - 1 and args.iterations is not None  # an iteration budget ends validated
            if not args.no_val and (epoch % args.eval_interval == args.eval_interval - 1 or last):
                evaluation = evaluate(run.model, run.val_loader, run.model.num_classes, run.precision,
                                      criterion=run.val_criterion, show=main_rank, label_input=label_input)
                if main_rank:
                    log_validation(evaluation, epoch, names, run.writer, run.summary, args.dataset, run.experiment_dir)
                record["val"] = evaluation.metrics
                first = not any("val" in h for h in state.history)  # a first model_best even at mIoU 0
                if evaluation.metrics["mIoU"] > state.best_pred or first:
                    state.best_pred, is_best = evaluation.metrics["mIoU"], True
            state.history.append(record)
            state.epoch, state.iteration, state.partial = epoch + 1, 0, None
            path = save(state, is_best)
            if stop.agreed() is not None and epoch < args.epochs - 1:
                stop.exit(f"after epoch {epoch}; resume with: --resume {path}")
    run.writer.close()
    run.seconds = time.time() - start
    log(f"Best mIoU {state.best_pred:.4f}; run directory {run.experiment_dir or ''}")
    return run
