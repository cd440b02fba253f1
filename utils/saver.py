"""Run directories and checkpoints, laid out as the reference:

run/<dataset>/<checkname>/experiment_<k>/{checkpoint.pth.tar, parameters.txt, best_pred.txt, events...}
run/<dataset>/<checkname>/model_best.pth.tar    (best over all experiments of that checkname)

Every write is atomic (temporary file + os.replace); every read uses ``weights_only=True``.
"""
import glob
import os
import shutil
import tempfile

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names it."""


def atomic_write(path, write):
    """Write ``path`` through ``write(tmp)`` on a temporary file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix="tmp-",
                               suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
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
    """Read a checkpoint without running pickled code; errors name the file and the flag."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{flag}: no checkpoint at {path} (check the path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{flag}: cannot read checkpoint {path}: {first} "
                              f"(is it a complete PyTorch checkpoint?)") from None


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

    def save_experiment_config(self, config):
        """parameters.txt: one ``key:value`` line per entry of ``config`` (the run's arguments), sorted."""
        write_text_atomic(os.path.join(self.experiment_dir, "parameters.txt"),
                          "".join(f"{k}:{v}\n" for k, v in sorted(config.items())))
