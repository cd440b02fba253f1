"""A sweep cell (sweep.py): its folder ``DIR/runs/<NAME>/seed<S>`` (its result record, the command that started
it, validated epochs and cost, newest checkpoint and whether its training finished, setting it aside), what the
sweep will do with it (``plan``), and the supervisor of the cells' training processes."""
import json
import os
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass

from utils.cli import UsageError, stop_signals

SCRIPTS = ("train.py", "train_kd.py")
CELL = "cell.json"  # in a cell folder: the command that started it


def last_checkpoint(run_dir):
    """The newest checkpoint.pth.tar under ``run_dir`` (an unfinished cell's), or None."""
    found = [os.path.join(d, "checkpoint.pth.tar") for d, _, files in os.walk(run_dir) if "checkpoint.pth.tar" in files]
    return max(found, key=os.path.getmtime) if found else None


def validated(run_dir):
    """The val mIoU of every validated epoch in the run's history.json files, in epoch order."""
    epochs = {}
    for dirpath, _, files in os.walk(run_dir):
        if "history.json" in files:
            with open(os.path.join(dirpath, "history.json")) as f:
                epochs.update({r["epoch"]: float(r["val"]["mIoU"]) for r in json.load(f) if "val" in r})
    return [epochs[e] for e in sorted(epochs)]


def cost(run_dir):
    """A run's training cost from its history.json files: wall seconds of its training epochs (validation left
    out), iterations, and FLOPs (each epoch's first step counted, times its iterations; None for runs from
    before FLOPs were counted)."""
    seconds, iterations, flops = 0.0, 0, 0.0
    for dirpath, _, files in os.walk(run_dir):
        if "history.json" in files:
            with open(os.path.join(dirpath, "history.json")) as f:
                for record in json.load(f):
                    train = record.get("train", {})
                    seconds += train.get("seconds", 0.0)
                    iterations += train.get("iterations", 0)
                    fpi = train.get("flops_per_iteration")
                    flops = None if fpi is None or flops is None else flops + fpi * train.get("iterations", 0)
    return {"train_seconds": round(seconds, 2), "iterations": iterations, "flops": flops if iterations else None}


def last_line(path):
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def result_of(run_dir):
    """The result.json record of a run that finished in ``run_dir``, or None; UsageError when it is unreadable."""
    done = os.path.join(run_dir, "result.json")
    if not os.path.isfile(done):
        return None
    try:
        with open(done) as f:
            record = json.load(f)
        assert isinstance(record, dict) and isinstance(record.get("cmd"), list)
    except (OSError, ValueError, AssertionError):
        raise UsageError(f"{done} is unreadable or not a sweep result; move that cell folder away to retrain it, "
                         f"or restore the file") from None
    return record


def logged_command(log):
    """The command (after the interpreter) on the first command line of a cell's log, without the ``--resume``
    the sweep added; None when the log has none."""
    try:
        with open(log, errors="replace") as f:
            line = next((x for x in f if x.strip() and not x.startswith("# ")), "")
        words = shlex.split(line)
    except (OSError, ValueError):
        return None
    if "--resume" in words[-2:-1]:
        words = words[:-2]
    return words[1:] if any(os.path.basename(w) in SCRIPTS for w in words[:4]) else None


def started_command(cell_json, log):
    """The command (after the interpreter) that started a cell: its ``cell.json``, or for a cell of an older
    sweep.py its log's; None when neither says."""
    try:
        with open(cell_json) as f:
            return list(json.load(f)["cmd"])
    except (OSError, ValueError, KeyError, TypeError):
        return logged_command(log)


def finished_training(checkpoint):
    """Whether the run of ``checkpoint`` trained all its epochs (its record may still be missing)."""
    import torch

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("iteration", 0)) == 0 and int(ckpt["epoch"]) >= int(ckpt["args"]["epochs"])
    except Exception:  # unreadable or without its epochs: not known to be finished
        return False


def set_aside(run_dir):
    """Move a finished cell of another command to ``<cell>.old-<k>`` (never deleted)."""
    k = 0
    while os.path.exists(f"{run_dir}.old-{k}"):
        k += 1
    os.rename(run_dir, f"{run_dir}.old-{k}")
    return f"{run_dir}.old-{k}"


def identity(cmd):
    """What makes two commands of one cell the same run: their words after the interpreter, the script by name,
    without the ``--run-dir`` value (always the cell's own folder, however ``--out`` is spelled)."""
    out, words = [], iter(cmd)
    for w in words:
        if w == "--run-dir":
            next(words, None)
        elif not w.startswith("--run-dir="):
            out.append(os.path.basename(w) if os.path.basename(w) in SCRIPTS else w)
    return out


@dataclass
class Cell:
    """A (run, seed) of the grid and what the sweep will do with it: ``skip`` (finished with this command),
    ``record`` (its training finished, its record was not written), ``resume`` (from ``checkpoint``), ``start``
    (``stale``: an old attempt's folder to clear first), or ``changed`` (finished or started with another
    command)."""
    name: str
    seed: int
    cmd: list
    run_dir: str
    log: str
    action: str = "start"
    checkpoint: str = None
    record: dict = None
    stale: bool = False

    @property
    def launched(self):
        return self.cmd + (["--resume", self.checkpoint] if self.action == "resume" else [])


def plan(name, seed, cmd, run_dir, log, resume=False):
    """What to do with one cell (its command ``cmd``, folder and log), from what its folder holds."""
    cell = Cell(name, seed, cmd, run_dir, log)
    mine = identity(cmd[1:])
    record = result_of(run_dir)
    if record is not None:
        same = identity(record["cmd"]) == mine
        cell.action, cell.record = ("skip", {**record, "skipped": True}) if same else ("changed", record)
        return cell
    if not os.path.isdir(run_dir):
        return cell
    started = started_command(os.path.join(run_dir, CELL), log)
    if started is None:
        raise UsageError(f"{run_dir} exists but was not made by sweep.py (no {CELL}, no log); move it away, or use "
                         f"another --out")
    if identity(started) != mine:
        cell.action = "changed"
        return cell
    cell.checkpoint = last_checkpoint(run_dir)
    if cell.checkpoint and finished_training(cell.checkpoint):
        cell.action = "record"
    elif cell.checkpoint and resume:
        cell.action = "resume"
    else:
        cell.stale = True
    return cell


class Supervisor:
    """SIGTERM / SIGINT to the sweep: passed on to every running training (each saves and stops; a second signal
    stops them at once), no new one starts, and the sweep ends with 128 + the signal.  The trainings run in their
    own sessions, so a terminal's Ctrl-C reaches them once, through here."""

    def __init__(self, write=print):
        self.signal, self.children, self.lock, self.write = None, set(), threading.Lock(), write

    def __call__(self, signum, frame):
        with self.lock:
            first = self.signal is None
            self.signal = self.signal or signal.Signals(signum)
            for child in self.children:
                child.send_signal(signum)
        self.write(f"{signal.Signals(signum).name}: " + (f"asking {len(self.children)} running training(s) to save "
                                                          f"and stop; no new one starts" if first else
                                                          "passed on: the trainings stop at once"))

    def start(self, cmd, **kwargs):
        """A training process (None when a signal came first)."""
        with self.lock:
            if self.signal is not None:
                return None
            child = subprocess.Popen(cmd, start_new_session=True, **kwargs)
            self.children.add(child)
        return child

    def wait(self, child):
        rc = child.wait()
        with self.lock:
            self.children.discard(child)
        return rc

    def installed(self):
        """Within: SIGINT and SIGTERM call this object (in the main thread)."""
        return stop_signals(self)
