"""Device and precision setup in one place: which device, which autocast dtype, which memory format.

``--amp`` picks bf16 where the hardware runs it natively (CUDA Ampere or newer; CPUs with AVX512-BF16
or AMX) and fp16 with a GradScaler on older GPUs.  Parameters, optimizer state and checkpoints stay
fp32 either way; losses are computed in fp32 (see ``utils.loss`` and ``distillation``).
"""
import contextlib
import functools
import os

import torch


@functools.cache
def cpu_has_native_bf16():
    """True on CPUs with bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast is fast."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:  # not Linux: trust oneDNN's answer
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fp32(x):
    """``x`` in fp32 when it is a 16-bit float (autocast output); wider dtypes stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def amp_dtype(device, amp, requested="auto"):
    """The autocast dtype for ``--amp`` on ``device`` (None: fp32). ``requested``: auto, bf16 or fp16.

    ``auto`` picks bf16 where the hardware runs it natively (Ampere or newer; emulated bf16, which
    ``torch.cuda.is_bf16_supported()`` counts by default, is slower than fp16), fp16 + GradScaler on older GPUs,
    and on a CPU bf16 with native bf16 instructions, else fp32 (there is no fast 16-bit path on such a CPU)."""
    if not amp:
        return None
    if requested == "bf16":
        return torch.bfloat16
    if requested == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


class Precision:
    """Autocast context, GradScaler (fp16 only) and memory format for a training or evaluation run."""

    def __init__(self, device, amp=False, dtype="auto", channels_last=False):
        self.device = device
        self.dtype = amp_dtype(device, amp, dtype)
        self.amp_declined = amp and self.dtype is None  # --amp on a CPU without native bf16
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, *modules):
        """Move modules to the device (and memory format). Parameters stay fp32."""
        for m in modules:
            m.to(self.device, memory_format=self.memory_format)
        return modules[0] if len(modules) == 1 else modules

    def images(self, x):
        return x.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def backward_step(self, loss, optimizer, sync_grads=(), clip=()):
        """loss.backward() and optimizer.step(), through the GradScaler when fp16; the gradients of
        ``sync_grads`` are averaged over ranks in between (what DDP does for the parameters it wraps), then
        each ``(parameters, max_norm)`` of ``clip`` is clipped to that gradient norm."""
        self.scaler.scale(loss).backward()
        if sync_grads:
            import torch.distributed as dist

            grads = [p.grad for p in sync_grads if p.grad is not None]
            for g in grads:
                dist.all_reduce(g)
                g.div_(dist.get_world_size())
        if clip:
            self.scaler.unscale_(optimizer)
            for params, max_norm in clip:
                torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.scaler.step(optimizer)
        self.scaler.update()

    def describe(self):
        name = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[self.dtype]
        slow = self.device.type == "cpu" and self.dtype is not None and not cpu_has_native_bf16()
        fmt = ", channels_last" if self.memory_format == torch.channels_last else ""
        note = " (this CPU has no native bf16: expect it slower)" if slow else ""
        if self.amp_declined:
            note = " (--amp: this CPU has no native bf16, so fp32; --amp-dtype bf16 forces it)"
        return f"{name}{fmt} on {self.device}{note}"


def pick_device(no_cuda=False):
    """The first CUDA device when there is one and ``no_cuda`` is not set, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


def default_workers():
    """DataLoader workers per process: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def device_memory(cuda=False, index=0):
    """Bytes of memory of the training device: the GPU's, or this machine's RAM (None where unknown)."""
    if cuda:
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class HostSyncs:
    """Within: the host syncs of the code run, as a list of op names.  On a GPU, ``torch.cuda.set_sync_debug_mode``
    sees every one (host-to-device copies too); on any device the dispatcher sees the ops that make the host wait
    for a GPU: reading a value back (``.item()``, ``.tolist()``, ``if tensor``), and ops whose output size depends
    on the data (``nonzero``, ``unique``, ``masked_select``, an index or index_put with a boolean mask)."""
    OPS = {"_local_scalar_dense", "nonzero", "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive",
           "masked_select", "is_nonzero", "equal", "allclose", "repeat_interleave"}

    def __init__(self, device="cpu"):
        self.device, self.seen = torch.device(device), []

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func._schema.name.split("::")[1]
                masks = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
                if name in outer.OPS or (name.startswith("index") and any(
                        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in masks)):
                    outer.seen.append(name)
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        if self.device.type == "cuda":
            import warnings

            self.caught = warnings.catch_warnings(record=True)
            self.warned = self.caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            self.caught.__exit__(*exc)
            self.seen += [f"cuda: {str(w.message).splitlines()[0][:80]}" for w in self.warned
                          if "synchroniz" in str(w.message)]
        self.mode.__exit__(*exc)
        return False
