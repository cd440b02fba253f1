"""A sweep cell's folder (``DIR/runs/<NAME>/seed<S>``, sweep.py): its result record, the command that started
it, validated epochs, newest checkpoint and whether its training finished, and setting a cell aside."""
import json
import os
import shlex

from utils.cli import UsageError


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


def finished(cmd, run_dir):
    """The record of an identical run (same ``cmd``) that already finished in ``run_dir``, or None."""
    record = result_of(run_dir)
    if record is not None and record["cmd"] == cmd[1:]:
        return {**record, "skipped": True}
    return None


def started_command(cell_json, log):
    """The command (after the interpreter) that started a cell: its ``cell.json``, or for a cell of an older
    sweep.py the first command line of its log (without the ``--resume`` it added); None when neither says."""
    try:
        with open(cell_json) as f:
            record = json.load(f)
        return list(record["cmd"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(log, errors="replace") as f:
            line = next((x for x in f if x.strip() and not x.startswith("# ")), "")
        words = shlex.split(line)
    except (OSError, ValueError):
        return None
    if "--resume" in words[-2:-1]:
        words = words[:-2]
    return words[1:] or None


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
