"""The run state: where a run is (epoch, iteration, the partial epoch's loss totals), its best mIoU, history and
RNG states; what a checkpoint holds besides weights and optimizers, and what ``--resume`` restores."""
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from modeling import load_checkpoint
from utils.saver import CheckpointError


@dataclass
class RunState:
    epoch: int = 0                   # the next epoch to run, or the one to finish when iteration > 0
    iteration: int = 0               # iterations of ``epoch`` already done
    partial: tuple = None            # (loss totals, steps) of those iterations
    best_pred: float = 0.0           # best val mIoU so far
    history: list = field(default_factory=list)  # one record per finished epoch: {"epoch", "train", "val"}
    rng: dict = None                 # RNG states to restore (a resumed run)

    def at(self, epoch, iteration=0, partial=None):
        """This state at another position (best and history shared)."""
        return RunState(epoch, iteration, partial, self.best_pred, self.history)


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


def make_checkpoint(state, model, optimizer, args, scaler, distiller=None, warmup_optimizer=None):
    """Everything a run needs to go on exactly from ``state`` (RNG states as they are now)."""
    ckpt = {"epoch": state.epoch, "iteration": state.iteration, "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "best_pred": state.best_pred, "args": dict(args),
            "history": state.history, "rng": get_rng_state()}
    if state.partial is not None:
        ckpt["partial"] = state.partial
    if scaler.is_enabled():
        ckpt["scaler"] = scaler.state_dict()
    if distiller is not None:
        ckpt["connectors"] = distiller.trainable_modules().state_dict()
        if warmup_optimizer is not None:
            ckpt["warmup_optimizer"] = warmup_optimizer.state_dict()
    return ckpt


def resume(ckpt, path, model, dataset, weights_only=False, optimizer=None, warmup_optimizer=None, distiller=None,
           scaler=None, join=None):
    """Load the ``--resume`` checkpoint ``ckpt`` (read from ``path``) into the run; returns its RunState.

    ``weights_only`` (``--ft``): the model weights alone, from epoch 0.  Otherwise the optimizer(s), the
    methods' modules, the GradScaler and the state; ``join()`` is called first when the checkpoint's
    optimizer was saved after the warm-up-only modules had joined it.  Returns ``(state, whether it had the
    methods' modules)``."""
    saved = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
    if not weights_only and saved.get("dataset", dataset) != dataset:
        raise CheckpointError(f"--resume {path} was trained on {saved['dataset']}, not --dataset {dataset}; resume "
                              f"on {saved['dataset']}, or start from its weights with --ft")
    try:
        load_checkpoint(model, ckpt)
    except ValueError as e:
        raise CheckpointError(f"--resume {path}: {e}") from None
    if weights_only:
        return RunState(), False
    if "optimizer" in ckpt:
        if distiller is not None and len(ckpt["optimizer"].get("param_groups", [])) > len(optimizer.param_groups):
            join()
        optimizer.load_state_dict(ckpt["optimizer"])
    connectors = distiller is not None and "connectors" in ckpt
    if connectors:
        try:
            distiller.load_trainable(ckpt["connectors"])
        except RuntimeError:
            raise CheckpointError(f"--resume {path}: its connectors belong to other distillation methods than this "
                                  f"run's; resume with the same method flags") from None
        if warmup_optimizer is not None and "warmup_optimizer" in ckpt:
            warmup_optimizer.load_state_dict(ckpt["warmup_optimizer"])
    if "scaler" in ckpt and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    state = RunState(int(ckpt.get("epoch", 0)), int(ckpt.get("iteration", 0)), ckpt.get("partial"),
                     float(ckpt.get("best_pred", 0.0)), list(ckpt.get("history", [])), ckpt.get("rng"))
    return state, connectors
