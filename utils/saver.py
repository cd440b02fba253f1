"""Run directories and checkpoints, laid out as the reference:

run/<dataset>/<checkname>/experiment_<k>/{checkpoint.pth.tar, parameters.txt, best_pred.txt, events...}
run/<dataset>/<checkname>/model_best.pth.tar    (best over all experiments of that checkname)

Every write is atomic (temporary file + os.replace); every read uses ``weights_only=True``.
"""
import contextlib
import glob
import numbers
import os
import shutil
import tempfile

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names it."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Write ``path`` through ``write(tmp)`` on a temporary file in the same folder, then os.replace.  The file
    gets the mode a plain ``open`` would give it (mkstemp's are private to their owner)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix="tmp-",
                               suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def copy_atomic(src, dst):
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def write_text_atomic(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def load_file(path, flag="--resume"):
    """Read a checkpoint without running pickled code, and check its structure; errors are one line naming the
    flag, the file and what is wrong with it (never advice to turn the safe loading off)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{flag}: no checkpoint at {path} (check the path)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e).strip()
        why = ("it holds objects other than tensors and plain containers, which are never unpickled here"
               if "weights_only" in text or "Weights only load failed" in text
               else text.splitlines()[0] if text else type(e).__name__)
        raise CheckpointError(f"{flag}: cannot read checkpoint {path}: {why} (is it a complete PyTorch "
                              f"checkpoint?)") from None
    problem = checkpoint_problem(ckpt)
    if problem:
        raise CheckpointError(f"{flag}: {path} is not a usable checkpoint: {problem}")
    return ckpt


def _tensors(mapping):
    """A state dict: names to tensors (a module's ``_extra_state``, e.g. CIRKD's queues: names to tensors too)."""
    return isinstance(mapping, dict) and all(
        isinstance(k, str) and (torch.is_tensor(v) or (k.endswith("_extra_state") and _tensors(v)))
        for k, v in mapping.items())


def checkpoint_problem(ckpt):
    """What is wrong with the structure of a loaded checkpoint (a DeepLab state dict, bare or under
    ``state_dict``, and this project's run fields), or None."""
    if not isinstance(ckpt, dict):
        return f"it holds a {type(ckpt).__name__}, not a dict"
    state = ckpt.get("state_dict", ckpt)
    if not _tensors(state) or not state:
        return "its state_dict is not a non-empty mapping of names to tensors"
    if "state_dict" not in ckpt:
        return None
    kinds = {"args": dict, "optimizer": dict, "warmup_optimizer": dict, "scaler": dict, "rng": dict,
             "history": list, "partial": (list, tuple), "rng_per_rank": list, "epoch": numbers.Integral,
             "iteration": numbers.Integral, "best_pred": numbers.Real}
    for key, kind in kinds.items():
        if key in ckpt and (not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool)):
            return f"its {key} is a {type(ckpt[key]).__name__}"
    if "connectors" in ckpt and not _tensors(ckpt["connectors"]):
        return "its connectors are not a mapping of names to tensors"
    if min(ckpt.get("epoch", 0), ckpt.get("iteration", 0)) < 0:
        return "its epoch or iteration is negative"
    for key in ("optimizer", "warmup_optimizer"):
        if key in ckpt and not isinstance(ckpt[key].get("param_groups", []), list):
            return f"its {key} has no list of param_groups"
    rng = ckpt.get("rng", {"python": 0, "numpy": 0, "torch": torch.zeros(0)})
    if not ({"python", "numpy", "torch"} <= set(rng) and torch.is_tensor(rng["torch"])):
        return "its rng states are malformed"
    if "partial" in ckpt and (len(ckpt["partial"]) != 2 or not isinstance(ckpt["partial"][0], dict)):
        return "its partial epoch totals are malformed"
    return None


def experiment_id(path):
    try:
        return int(os.path.basename(path).split("_")[-1])
    except ValueError:
        return -1


class Saver:
    """The run folder ``run_dir/dataset/checkname/experiment_<k>`` (a new k, or ``experiment_dir`` to continue
    one), created and checked to be writable at once."""

    def __init__(self, run_dir, dataset, checkname, experiment_dir=None):
        self.directory = os.path.join(run_dir, dataset, checkname)
        self.runs = sorted(glob.glob(os.path.join(self.directory, "experiment_*")), key=experiment_id)
        if experiment_dir is None:
            run_id = experiment_id(self.runs[-1]) + 1 if self.runs else 0
            experiment_dir = os.path.join(self.directory, f"experiment_{run_id}")
        self.experiment_dir = experiment_dir
        self.made = []  # the folders this Saver created, outermost first (what discard() may remove)
        self.saved = False
        missing = os.path.abspath(experiment_dir)
        while not os.path.exists(missing):
            self.made.insert(0, missing)
            missing = os.path.dirname(missing)
        try:
            os.makedirs(self.experiment_dir, exist_ok=True)
            probe = os.path.join(self.experiment_dir, ".write-test")
            open(probe, "w").close()
            os.remove(probe)
        except OSError as e:
            raise CheckpointError(f"--run-dir: cannot write the run directory {self.experiment_dir}: "
                                  f"{e.strerror or e} (choose a writable --run-dir)") from None

    def save_checkpoint(self, state, is_best, filename="checkpoint.pth.tar"):
        """Write the latest state; when ``is_best``, record best_pred and update model_best."""
        path = os.path.join(self.experiment_dir, filename)
        self.saved = True  # from now on the experiment folder holds a run's work
        try:
            save_atomic(state, path)
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
            why = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
            raise CheckpointError(f"cannot write checkpoint {path}: {why} (free disk space or choose another "
                                  f"--run-dir; the previous checkpoint there is intact)") from None
        if not is_best:
            return path
        best_pred = state["best_pred"]
        write_text_atomic(os.path.join(self.experiment_dir, "best_pred.txt"), str(best_pred))
        previous = []
        for run in self.runs:
            if os.path.abspath(run) == os.path.abspath(self.experiment_dir):
                continue
            try:
                with open(os.path.join(run, "best_pred.txt")) as f:
                    previous.append(float(f.read()))
            except (OSError, ValueError):
                pass
        if not previous or best_pred > max(previous):
            copy_atomic(path, os.path.join(self.directory, "model_best.pth.tar"))
        return path

    def discard(self):
        """Remove what this Saver created when its run ends before its first checkpoint (a bad input found
        mid-start, a non-finite first loss): no half-made experiment is left behind.  A continued experiment,
        or one with a checkpoint, is never touched."""
        if self.saved or not self.made:
            return
        shutil.rmtree(self.made[-1], ignore_errors=True)
        for folder in reversed(self.made[:-1]):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty

    def save_experiment_config(self, config):
        """parameters.txt: one ``key:value`` line per entry of ``config`` (the run's arguments), sorted."""
        write_text_atomic(os.path.join(self.experiment_dir, "parameters.txt"),
                          "".join(f"{k}:{v}\n" for k, v in sorted(config.items())))
