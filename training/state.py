"""The run state: where a run is (epoch, iteration, the partial epoch's loss totals), its best mIoU, history and
RNG states; what a checkpoint holds besides weights and optimizers, and what ``--resume`` restores."""
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from distillation import METHODS
from modeling import load_checkpoint
from utils.saver import CheckpointError, Home, load_file


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


def make_checkpoint(state, model, optimizer, args, scaler, distiller=None, warmup_optimizer=None, rng=None,
                    home=None):
    """Everything a run needs to go on exactly from ``state``.  ``rng``: every rank's RNG states (default: this
    process's, as they are now); a checkpoint of several processes keeps them all (``rng_per_rank``); ``home``:
    the run's folder (:class:`utils.saver.Home`), where a ``--resume`` of it writes."""
    rng = rng or [get_rng_state()]
    ckpt = {"epoch": state.epoch, "iteration": state.iteration, "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "best_pred": state.best_pred, "args": dict(args),
            "history": state.history, "rng": rng[0]}
    if home is not None:
        ckpt["home"] = home.record()
    if len(rng) > 1:
        ckpt["rng_per_rank"] = rng
    if state.partial is not None:
        ckpt["partial"] = state.partial
    if scaler.is_enabled():
        ckpt["scaler"] = scaler.state_dict()
    if distiller is not None:
        ckpt["connectors"] = distiller.trainable_modules().state_dict()
        if warmup_optimizer is not None:
            ckpt["warmup_optimizer"] = warmup_optimizer.state_dict()
    return ckpt


def run_home(args, ckpt=None, log=print):
    """The run folder this run writes to, whatever the working directory: a new experiment under ``--run-dir``
    (default ``run``) / dataset / ``--checkname`` (default deeplab-<backbone>, attnfd-<backbone> for train_kd.py),
    or, for a ``--resume`` (not ``--ft``), the run the checkpoint belongs to: the experiment folder it is in, else
    the one it records.  A ``--run-dir`` or ``--checkname`` that names another run is refused with the way out."""
    run_dir = "run" if args.run_dir is None else args.run_dir
    checkname = args.checkname or ("attnfd-" if args.kd else "deeplab-") + args.backbone
    home = None if ckpt is None or args.ft else resumed_home(args.resume, ckpt)
    if home is None:
        if ckpt is not None and not args.ft:
            log(f"note: --resume {args.resume} records no run folder (a published or older checkpoint): the run "
                f"continues in a new experiment of {os.path.join(run_dir, args.dataset, checkname)}")
        return Home(os.path.abspath(run_dir), args.dataset, checkname)
    named = {"--run-dir": (args.run_dir, args.run_dir and os.path.join(args.run_dir, home.dataset, home.checkname)),
             "--checkname": (args.checkname, args.checkname and os.path.join(home.run_dir, home.dataset,
                                                                             args.checkname))}
    for flag, (value, directory) in named.items():
        if directory and os.path.realpath(directory) != os.path.realpath(home.directory):
            raise CheckpointError(f"{flag} {value}: --resume {args.resume} continues the run in {home.experiment_dir}, "
                                  f"and a resumed run writes only there: drop {flag}, or start a new run from its "
                                  f"weights with --ft")
    return home


def position(ckpt):
    return int(ckpt.get("epoch", 0)), int(ckpt.get("iteration", 0))


def resumed_home(path, ckpt):
    """The home of the run a ``--resume`` checkpoint belongs to: the experiment folder the file is (its
    ``checkpoint.pth.tar``), else the home it records (a copy, or its ``model_best.pth.tar``) when that run is
    there and not further on; None when it records none."""
    home = Home.of_file(path)
    if home is not None:
        return home
    home = Home.recorded(ckpt)
    if home is None or home.experiment is None:
        return None
    if not os.path.isdir(home.experiment_dir):
        raise CheckpointError(f"--resume {path} belongs to the run {home.experiment_dir}, which is not there; resume "
                              f"from the checkpoint.pth.tar in that run's folder, or start a new run from its weights "
                              f"with --ft")
    own = os.path.join(home.experiment_dir, "checkpoint.pth.tar")
    if os.path.isfile(own) and os.path.realpath(own) != os.path.realpath(path):
        theirs = position(load_file(own, "--resume"))
        if theirs > position(ckpt):
            raise CheckpointError(f"--resume {path} is an earlier state (epoch {ckpt.get('epoch', 0)}) of the run in "
                                  f"{home.experiment_dir}, which is at epoch {theirs[0]}: going on from it would "
                                  f"replace that run's later work; resume from {own}, or start a new run from its "
                                  f"weights with --ft")
    return home


def resume(ckpt, path, model, dataset, weights_only=False, optimizer=None, warmup_optimizer=None, distiller=None,
           scaler=None, join=None, kd=False, methods=(), batch_size=None, rank=0, world=1):
    """Load the ``--resume`` checkpoint ``ckpt`` (read from ``path``) into the run; returns its RunState.

    ``weights_only`` (``--ft``): the model weights alone, from epoch 0.  Otherwise the optimizer(s), the
    methods' modules, the GradScaler and the state; ``join()`` is called first when the checkpoint's
    optimizer was saved after the warm-up-only modules had joined it.  A checkpoint of another experiment
    (another script, method set or dataset, or another ``batch_size`` mid-epoch) is refused.  Returns ``(state,
    whether it had the methods' modules, the CBAM keys it lacked)``."""
    saved = ckpt.get("args", {})
    if not weights_only:
        refuse_another_experiment(saved, path, dataset, kd, methods, batch_size, int(ckpt.get("iteration", 0)))
    try:
        missing = load_checkpoint(model, ckpt)
    except ValueError as e:
        raise CheckpointError(f"--resume {path}: {e}") from None
    if weights_only:
        return RunState(), False, missing
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
        except ValueError as e:  # a method's own state that does not fit (CIRKD's queue lengths)
            raise CheckpointError(f"--resume {path}: {e}") from None
        if warmup_optimizer is not None and "warmup_optimizer" in ckpt:
            warmup_optimizer.load_state_dict(ckpt["warmup_optimizer"])
    if "scaler" in ckpt and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    per_rank = ckpt.get("rng_per_rank", [])  # this rank's own streams when the world size is the same
    rng = per_rank[rank] if len(per_rank) == world else ckpt.get("rng")
    state = RunState(int(ckpt.get("epoch", 0)), int(ckpt.get("iteration", 0)), ckpt.get("partial"),
                     float(ckpt.get("best_pred", 0.0)), list(ckpt.get("history", [])), rng)
    return state, connectors, missing


def refuse_another_experiment(saved, path, dataset, kd, methods, batch_size, iteration):
    """CheckpointError when the ``--resume`` checkpoint (its recorded args ``saved``) belongs to another
    experiment than this run's; the way out, ``--ft``, is in the message."""
    way_out = "or start from its weights with --ft"
    if saved.get("dataset", dataset) != dataset:
        raise CheckpointError(f"--resume {path} was trained on {saved['dataset']}, not --dataset {dataset}; resume "
                              f"on {saved['dataset']}, {way_out}")
    if "kd" in saved and bool(saved["kd"]) != kd:
        script, other = ("train_kd.py", "train.py") if saved["kd"] else ("train.py", "train_kd.py")
        raise CheckpointError(f"--resume {path} was written by {script}; {other} would continue it as another "
                              f"experiment; resume it with {script}, {way_out}")
    if kd and "kd" in saved:
        before = [n for n, m in METHODS.items() if saved.get(m.hyper[0].dest, m.hyper[0].default) != 0]
        if set(before) != set(methods):
            raise CheckpointError(f"--resume {path} distils with {', '.join(before) or 'no method'}, this run with "
                                  f"{', '.join(methods) or 'no method'}; resume with the same method flags, {way_out}")
    if iteration and "batch_size" in saved and saved["batch_size"] != batch_size:
        raise CheckpointError(f"--resume {path} stopped at iteration {iteration} of an epoch with --batch-size "
                              f"{saved['batch_size']}; resume it with --batch-size {saved['batch_size']} (the epoch's "
                              f"order depends on it), {way_out}")
