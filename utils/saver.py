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
from dataclasses import asdict, dataclass

import torch

from utils.outputs import atomic_write, write_file


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names it."""


class _WriteErrors:
    """A binary file whose failed writes are remembered: torch.save reports them as "unexpected pos"."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        self.f.flush()


def torch_save(obj, path):
    """``torch.save`` to ``path``; a failed write (a full disk) raises the OSError that says so."""
    with open(path, "wb") as f:
        out = _WriteErrors(f)
        try:
            torch.save(obj, out)
            f.flush()
        except RuntimeError:
            if out.error is not None:
                raise out.error from None
            raise


def save_atomic(obj, path):
    atomic_write(path, lambda tmp: torch_save(obj, tmp))


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
             "history": list, "partial": (list, tuple), "rng_per_rank": list, "home": dict, "epoch": numbers.Integral,
             "iteration": numbers.Integral, "best_pred": numbers.Real}
    for key, kind in kinds.items():
        if key in ckpt and (not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool)):
            return f"its {key} is a {type(ckpt[key]).__name__}"
    if "connectors" in ckpt and not _tensors(ckpt["connectors"]):
        return "its connectors are not a mapping of names to tensors"
    home = ckpt.get("home")
    if home is not None and (set(home) - {"experiment"} != {"run_dir", "dataset", "checkname"}
                             or not all(isinstance(v, str) for v in home.values())):
        return "its home (the run folder it records) is malformed"
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


@dataclass(frozen=True)
class Home:
    """Where a run lives: ``run_dir/dataset/checkname/experiment`` (``experiment`` None: a new
    ``experiment_<k>``, chosen when the Saver makes it).  Every checkpoint records it (``record``), and a
    ``--resume`` writes only there."""
    run_dir: str
    dataset: str
    checkname: str
    experiment: str = None

    @property
    def directory(self):
        return os.path.join(self.run_dir, self.dataset, self.checkname)

    @property
    def experiment_dir(self):
        return os.path.join(self.directory, self.experiment) if self.experiment else None

    def record(self):
        return {k: os.path.abspath(v) if k == "run_dir" else v for k, v in asdict(self).items()}

    @classmethod
    def of_file(cls, path):
        """The home of a run folder's own ``checkpoint.pth.tar`` (from where the file is), else None."""
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.basename(path) != "checkpoint.pth.tar" or not os.path.basename(folder).startswith("experiment_"):
            return None
        checkname = os.path.dirname(folder)
        dataset = os.path.dirname(checkname)
        return cls(os.path.dirname(dataset), os.path.basename(dataset), os.path.basename(checkname),
                   os.path.basename(folder))

    @classmethod
    def recorded(cls, ckpt):
        """The home a checkpoint records, or None (a published or older checkpoint)."""
        home = ckpt.get("home")
        return cls(**home) if isinstance(home, dict) else None


class Saver:
    """The run folder of ``home`` (a new ``experiment_<k>``, or the home's own experiment to continue it),
    made and checked to be writable at once; every file goes through the output guard ``outputs``."""

    def __init__(self, home, outputs):
        self.directory = home.directory
        self.runs = sorted(glob.glob(os.path.join(self.directory, "experiment_*")), key=experiment_id)
        if home.experiment is None:
            run_id = experiment_id(self.runs[-1]) + 1 if self.runs else 0
            home = Home(home.run_dir, home.dataset, home.checkname, f"experiment_{run_id}")
        self.home, self.outputs = home, outputs
        self.experiment_dir = home.experiment_dir
        self.made = []  # the folders this Saver created, outermost first (what discard() may remove)
        self.saved = False
        missing = os.path.abspath(self.experiment_dir)
        while not os.path.exists(missing):
            self.made.insert(0, missing)
            missing = os.path.dirname(missing)
        try:
            os.makedirs(self.experiment_dir, exist_ok=True)
            probe = os.path.join(self.experiment_dir, ".write-test")
            open(probe, "w").close()
            os.remove(probe)
        except OSError as e:
            self.discard()
            raise CheckpointError(f"--run-dir: cannot write the run directory {self.experiment_dir}: "
                                  f"{e.strerror or e} (choose a writable --run-dir)") from None

    def save_checkpoint(self, state, is_best, filename="checkpoint.pth.tar"):
        """Write the latest state; when ``is_best``, record best_pred and update model_best."""
        path = os.path.join(self.experiment_dir, filename)
        had = os.path.isfile(path)
        try:
            self.outputs.write_with(path, lambda tmp: torch_save(state, tmp))
        except (OSError, RuntimeError) as e:  # torch.save may report a failed write as RuntimeError
            why = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
            kept = "the previous checkpoint there is intact" if had else "nothing was saved"
            raise CheckpointError(f"cannot write checkpoint {path}: {why} (free disk space or choose another "
                                  f"--run-dir; {kept})") from None
        self.saved = True  # from now on the experiment folder holds a run's work
        if not is_best:
            return path
        best_pred = state["best_pred"]
        self.outputs.write_with(os.path.join(self.experiment_dir, "best_pred.txt"),
                                lambda tmp: write_file(tmp, str(best_pred)))
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
            self.outputs.write_with(os.path.join(self.directory, "model_best.pth.tar"),
                                    lambda tmp: shutil.copyfile(path, tmp))
        return path

    def write_text(self, name, text):
        """A text file of the experiment folder (history.json, parameters.txt), atomically."""
        return self.outputs.write_with(os.path.join(self.experiment_dir, name), lambda tmp: write_file(tmp, text))

    def discard(self):
        """Remove what this Saver created when its run ends before its first checkpoint (a bad input found
        mid-start, a non-finite first loss, a stop): no half-made experiment is left behind.  A continued
        experiment, or one with a checkpoint, is never touched."""
        if self.saved or not self.made:
            return
        shutil.rmtree(self.made[-1], ignore_errors=True)
        for folder in reversed(self.made[:-1]):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty
        self.made = []

    def save_experiment_config(self, config):
        """parameters.txt: one ``key:value`` line per entry of ``config`` (the run's arguments), sorted."""
        self.write_text("parameters.txt", "".join(f"{k}:{v}\n" for k, v in sorted(config.items())))

