"""Learning-rate schedules set every iteration, as the reference ``LR_Scheduler``.

lr(T) = base * factor(T) with T = epoch * iters_per_epoch + i; poly: (1 - T/N)^0.9; cos:
0.5 * (1 + cos(pi T/N)); step: 0.1 ** (epoch // step).  Each param group keeps its own base lr
(``initial_lr``), so the 10x head group stays at 10x the backbone group.
"""
import math


class LRSchedule:
    def __init__(self, mode, num_epochs, iters_per_epoch, lr_step=None, iterations=None):
        """``iterations``: a run of that many iterations (``--iterations``) instead of ``num_epochs`` whole epochs."""
        if mode not in ("poly", "cos", "step"):
            raise ValueError(f"--lr-scheduler must be poly, step or cos, got {mode!r}")
        self.mode, self.iters_per_epoch = mode, iters_per_epoch
        self.N = num_epochs * iters_per_epoch if iterations is None else iterations
        self.lr_step = lr_step or max(1, num_epochs // 3)

    def epoch_length(self, epoch):
        """The iterations epoch ``epoch`` trains: all of them, but the last epoch of an iteration budget's."""
        return max(0, min(self.iters_per_epoch, self.N - epoch * self.iters_per_epoch))

    def factor(self, epoch, i):
        T = epoch * self.iters_per_epoch + i
        if self.mode == "poly":
            return max(0.0, 1 - T / self.N) ** 0.9
        if self.mode == "cos":
            return 0.5 * (1 + math.cos(math.pi * T / self.N))
        return 0.1 ** (epoch // self.lr_step)

    def __call__(self, optimizer, i, epoch):
        f = self.factor(epoch, i)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * f
        return optimizer.param_groups[0]["lr"]
