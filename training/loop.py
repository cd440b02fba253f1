"""The training loop: one step, one epoch, and what a validation writes.  Free functions of what they use."""
import contextlib
import math
import os
import signal
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from utils import distributed
from utils.cli import stop_signals
from utils.device import fp32

STEADY_AFTER = 10  # iterations of an epoch left out of its steady-state images/s (start-up, first batches)
# what an epoch's history records about its speed and cost: measurements, not state (compare_checkpoints ignores them)
MEASUREMENTS = {"images_per_s", "steady_images_per_s", "data_wait", "seconds", "iterations", "flops_per_iteration"}


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss); the message says where and what to try."""


class NullWriter:
    """The tensorboard writer of ranks other than 0: they write nothing."""

    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


class StopRequest:
    """SIGINT/SIGTERM while ``installed()``: finish the step in flight, save, exit (a second one acts at once, as a
    SystemExit, so that a run that saved nothing yet leaves no folder behind).
    Under torchrun a signal reaches the ranks at different times, or only one of them: ``agreed()`` is where they
    decide together, so that all save the same step and all exit with 128 + the signal."""

    def __init__(self, log=print, device="cpu"):
        self.signal, self.log, self.device = None, log, device

    def agreed(self):
        """The signal any rank has caught, or None (a collective: every rank calls it at the same points)."""
        value = distributed.max_over_ranks(self.signal.value if self.signal else 0, self.device)
        if value and self.signal is None:
            self.signal = signal.Signals(value)
        return self.signal if value else None

    def __call__(self, signum, frame):
        if self.signal is not None:  # the second one: stop at once, through the finally blocks (no half-made run)
            self.log(f"\n{signal.Signals(signum).name} again: stopping now, without saving this epoch")
            raise SystemExit(128 + signum)
        self.signal = signal.Signals(signum)
        self.log(f"\n{self.signal.name}: finishing this step, then saving (again to stop at once)")

    def exit(self, message):
        self.log(f"Stopped by {self.signal.name} {message}")
        raise SystemExit(128 + self.signal.value)

    def installed(self):
        """Within: SIGINT and SIGTERM call this object (in the main thread; elsewhere signals stay as they are)."""
        return stop_signals(self)


def train_step(net, criterion, optimizer, precision, image, target, sync_grads=(), **kwargs):
    """One optimisation step of a model (``net(image) -> logits``) or a distiller (``-> (logits, terms)``).

    The forward runs under ``precision``'s autocast; the CE and every distillation term are fp32 and are
    losses of the global batch (identical on every rank).  ``sync_grads``: parameters whose gradients are
    averaged over ranks by hand, for a ``net`` not wrapped in DDP (the warm-up epoch).
    Returns the detached loss values to log, without a host sync.
    """
    inner = getattr(net, "module", net)  # under DDP: the distiller or model
    with precision.autocast():
        out = net(image, labels=target, **kwargs) if getattr(inner, "takes_labels", False) else net(image, **kwargs)
    logits, terms = out if isinstance(out, tuple) else (out, {})
    terms = {k: fp32(v) for k, v in terms.items()}
    ce = criterion(fp32(logits), target)
    distill = sum(terms.values())
    loss = ce + distill
    optimizer.zero_grad(set_to_none=True)
    precision.backward_step(loss, optimizer, sync_grads, inner.clip_groups() if hasattr(inner, "clip_groups") else ())
    logged = {"total_loss_iter": loss, "ce": ce, **terms}
    if terms:
        logged["distill/total"] = distill
    return {k: v.detach() for k, v in logged.items()}


def train_one_epoch(net, loader, criterion, optimizer, schedule, precision, epoch, start=0, partial=None,
                    warmup=None, sync_grads=(), log_interval=10, save_every=0, writer=None, show=True,
                    stop=None, save=None, log=print, count_flops=True):
    """Epoch ``epoch`` from iteration ``start`` (a resumed epoch; ``partial``: the (totals, steps) of its first
    part).  ``warmup``: None for a model, else the distiller's warm-up flag.  Every ``log_interval`` steps the
    losses are read back once (a NaN or inf stops the run) and written to ``writer``; every ``save_every``
    steps, and when a rank has caught a signal (``stop``, agreed at those points), ``save(iteration, partial) ->
    path`` writes a checkpoint (at the epoch's last iteration too: the resumed run then validates the epoch).
    Returns the epoch's mean losses, images/s (of all processes; ``steady_images_per_s`` without its first
    ``STEADY_AFTER`` iterations, from the first host sync after them), the share of time spent waiting for data, its
    wall seconds and iterations, and (``count_flops``) the FLOPs of its first step, of all processes
    (``torch.utils.flop_counter``: machine-independent; the step's numbers are those of an uncounted one).
    """
    loader.sampler.set_epoch(epoch, start)
    iters, batch = schedule.epoch_length(epoch), loader.batch_size * loader.sampler.world
    writer = writer or NullWriter()
    net.train()
    totals, n = (dict(partial[0]), partial[1]) if partial else ({}, 0)
    pending, data_wait, done, steady = [], 0.0, 0, None
    begin = tick = time.perf_counter()
    bar = tqdm(loader, desc="Train", dynamic_ncols=True, disable=not show)
    kwargs = {} if warmup is None else {"warmup": warmup}
    for i, sample in enumerate(bar, start):
        data_wait += time.perf_counter() - tick
        lr = schedule(optimizer, i, epoch)
        image = precision.images(sample["image"])
        target = sample["label"].to(precision.device, non_blocking=True)
        with FlopCounterMode(display=False) if count_flops and done == 0 else contextlib.nullcontext() as counter:
            pending.append((epoch, i, lr, train_step(net, criterion, optimizer, precision, image, target, sync_grads,
                                                     **kwargs)))
        if counter is not None:
            flops = counter.get_total_flops() * loader.sampler.world
        n, done = n + 1, done + 1
        last = i == iters - 1
        every = save_every and (i + 1) % save_every == 0 and not last
        alone_stopping = stop is not None and stop.signal is not None and distributed.world_size() == 1
        if len(pending) == log_interval or last or every or alone_stopping:  # the same iterations on every rank
            flush(pending, totals, writer, schedule.iters_per_epoch)  # the one host sync every --log-interval steps
            pending = []
            if steady is None and done >= STEADY_AFTER:  # synced here: the steady state's clock starts
                steady = (time.perf_counter(), done)
            bar.set_description(f"Train loss: {totals['total_loss_iter'] / n:.3f}" + (" (warm-up)" if warmup else ""))
            stopping = stop is not None and stop.agreed() is not None
            if every or stopping:
                path = save(i + 1, (totals, n))
                if stopping:
                    stop.exit(f"at epoch {epoch}, iteration {i + 1}; checkpoint {path}. Resume with: --resume {path}")
        if last and iters < schedule.iters_per_epoch:
            break  # an iteration budget's last epoch stops early
        tick = time.perf_counter()
    bar.close()
    seconds = time.perf_counter() - begin
    means = {k: v / max(n, 1) for k, v in totals.items()}
    means["images_per_s"] = done * batch / seconds
    if steady is not None and done > steady[1]:  # after the first STEADY_AFTER iterations, to the last flush
        means["steady_images_per_s"] = (done - steady[1]) * batch / (begin + seconds - steady[0])
    means["data_wait"] = data_wait / seconds
    means["seconds"], means["iterations"] = seconds, done
    if count_flops and done:
        means["flops_per_iteration"] = flops
    writer.add_scalar("train/total_loss_epoch", means.get("total_loss_iter", 0.0), epoch)
    writer.add_scalar("train/images_per_s", means["images_per_s"], epoch)
    log(f"[Epoch: {epoch}, numImages: {n * batch:5d}] Loss: {totals.get('total_loss_iter', 0.0):.3f}"
        f" ({means['images_per_s']:.1f} images/s, {100 * means['data_wait']:.0f}% waiting for data)"
        + (" (warm-up: connectors only)" if warmup else ""))
    return means


def flush(pending, totals, writer, iters_per_epoch):
    """Add the ``pending`` steps' losses to ``totals`` and the writer.  Losses are global-batch values, the same
    on every rank, so every rank sees a non-finite one and stops."""
    values = torch.stack([torch.stack(list(logged.values())) for *_, logged in pending]).tolist()
    for (epoch, i, lr, logged), row in zip(pending, values):
        if not all(math.isfinite(v) for v in row):
            raise TrainingError(f"non-finite loss at epoch {epoch}, iteration {i} "
                                f"({', '.join(f'{k}={v}' for k, v in zip(logged, row))}); nothing was saved after "
                                f"the last good checkpoint; try a lower --lr, or drop --amp-dtype fp16")
        step = epoch * iters_per_epoch + i
        for k, v in zip(logged, row):
            totals[k] = totals.get(k, 0.0) + v
            writer.add_scalar(f"train/{k}", v, step)
        writer.add_scalar("train/lr", lr, step)


def log_validation(evaluation, epoch, class_names, writer, summary, dataset, vis_dir):
    """Print a validation, write its scalars to tensorboard and its first images as a PNG grid under ``vis_dir``."""
    r = evaluation.metrics
    for k in ("mIoU", "Acc", "Acc_class", "fwIoU"):
        writer.add_scalar(f"val/{k}", r[k], epoch)
    writer.add_scalar("val/total_loss_epoch", r["loss"], epoch)
    for name, iou in zip(class_names, r["IoU"]):
        if iou is not None:
            writer.add_scalar(f"val/IoU/{name}", iou, epoch)
    if evaluation.first is not None:
        summary.visualize_image(writer, dataset, *evaluation.first, epoch, png_dir=os.path.join(vis_dir, "vis"))
    print(f"Validation: [Epoch: {epoch}, numImages: {evaluation.images:5d}]")
    print(f"Acc:{r['Acc']:.4f}, Acc_class:{r['Acc_class']:.4f}, mIoU:{r['mIoU']:.4f}, fwIoU: {r['fwIoU']:.4f}")
    print("Per-class IoU: " + ", ".join(f"{c}={'n/a' if v is None else f'{v:.3f}'}"
                                       for c, v in zip(class_names, r["IoU"])))
