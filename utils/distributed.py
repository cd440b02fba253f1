"""torch.distributed in one place: start-up from torchrun or SLURM, rank helpers, reductions, global-batch BatchNorm.

``python train.py ...`` runs one process; ``torchrun --nproc_per_node=N train.py ...`` (or ``srun`` under
SLURM with MASTER_ADDR/MASTER_PORT exported) runs N, one per GPU (NCCL) or per CPU slot (gloo).
Losses reduce over ranks through :func:`sum_over_ranks`, which is differentiable: each rank then holds the
loss of the whole global batch, and DDP's gradient average turns into that loss's gradient.
"""
import os

import torch
import torch.distributed as dist
import torch.nn as nn


def _env_ranks():
    """(rank, world_size, local_rank) from torchrun's or SLURM's environment, or None for one process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "MASTER_ADDR" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return None


def init(cuda):
    """Join the process group when started by torchrun/SLURM (GPU = the local rank's)."""
    ranks = _env_ranks()
    if ranks is None or is_initialized():
        return
    rank, world, local = ranks
    if cuda:
        torch.cuda.set_device(local)
    os.environ.setdefault("MASTER_PORT", "29500")
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)


def local_rank():
    """This process's index on its machine (torchrun's LOCAL_RANK or SLURM's SLURM_LOCALID); 0 alone."""
    ranks = _env_ranks() if is_initialized() else None
    return ranks[2] if ranks else 0


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_initialized() else 0


def world_size():
    return dist.get_world_size() if is_initialized() else 1


def barrier():
    if is_initialized():
        dist.barrier()


def cleanup():
    if is_initialized():
        dist.destroy_process_group()


def max_over_ranks(value, device="cpu"):
    """The largest of an integer ``value`` over all ranks (a collective: every rank calls it at the same point)."""
    if not is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (a collective); ``[obj]`` in one process."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(x):
    """Sum of ``x`` over all ranks, differentiable (backward sums the gradients too); ``x`` alone in one process."""
    if not is_initialized():
        return x
    if x.requires_grad:
        return _SumOverRanks.apply(x)
    x = x.clone()
    dist.all_reduce(x)
    return x


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose backward is all_reduce(SUM) of the gradients: d(sum_r x_r)/dx_q summed over
    the ranks whose losses used the sum."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather_batch(x):
    """The global batch: every rank's ``x`` (B x ...) concatenated in rank order (a collective); ``x`` alone in
    one process.  Differentiable when ``x`` requires grad: the gradient of each rank's part is the sum over the
    ranks of the gradients their losses put on it (as ``sum_over_ranks``)."""
    if not is_initialized():
        return x
    if x.requires_grad:
        return _GatherBatch.apply(x)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherBatch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.size = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # gloo has no reduce_scatter: sum everything, keep this rank's rows
        return grad[rank() * ctx.size:(rank() + 1) * ctx.size]


def global_batch(x):
    """Samples in the global batch of which ``x`` (B x ...) is this rank's part."""
    return x.shape[0] * world_size()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across ranks, for CPU (gloo):
    nn.SyncBatchNorm runs on GPUs only.  Mean and variance come from per-rank sums through the
    differentiable ``sum_over_ranks``, so the backward matches a single process too.  Same parameters,
    buffers and state-dict keys as nn.BatchNorm2d."""

    def forward(self, x):
        if not (self.training and is_initialized()):
            return super().forward(x)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        n = sum_over_ranks(torch.tensor(float(xf.numel() // xf.shape[1])))
        mean = sum_over_ranks(xf.sum(dim=(0, 2, 3))) / n
        var = sum_over_ranks(((xf - mean[None, :, None, None]) ** 2).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(float(n) - 1, 1.0), m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(module, cuda):
    """Every BatchNorm of ``module`` to nn.SyncBatchNorm (CUDA) or :class:`GlobalBatchNorm2d` (CPU), with the
    same parameters and buffers (the optimizer's references stay valid)."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, cuda)
    return module
