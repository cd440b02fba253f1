"""Compare two checkpoints (or two run folders, checkpoint by checkpoint) tensor for tensor.

    python scripts/compare_checkpoints.py BEFORE.pth.tar AFTER.pth.tar
    python scripts/compare_checkpoints.py BEFORE/run AFTER/run      # every */checkpoint.pth.tar under both

Everything a run's future depends on must be identical: weights, optimizer state(s), connectors, RNG states,
epoch, iteration, best mIoU and the history's losses and metrics (its timings and cost measurements are left
out). ``args`` may differ (a refactor may add or drop a flag): their differences are listed, not counted;
``home`` (the run's folder) is left out.  Exit 0 when every
pair is identical, 1 otherwise.
"""
import glob
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.loop import MEASUREMENTS  # noqa: E402
from utils.cli import ArgumentParser, UsageError, one_line_errors  # noqa: E402
from utils.saver import CheckpointError, load_file  # noqa: E402

TIMINGS = MEASUREMENTS  # measurements, not state


def differences(a, b, where=""):
    """Paths at which the nested values ``a`` and ``b`` differ (tensors bit for bit, dtype and shape too)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        same = torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape \
            and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in one" for k in set(a) ^ set(b) if k not in TIMINGS]
        for k in a.keys() & b.keys():
            if k not in TIMINGS:
                out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def compare(path_a, path_b):
    a, b = (load_file(p, "checkpoint") for p in (path_a, path_b))
    args_a, args_b = a.pop("args", {}), b.pop("args", {})
    for ckpt in (a, b):
        ckpt.pop("home", None)  # where the run lives: two runs compared live in two places
    diffs = differences(a, b)
    arg_notes = [f"{k}: {args_a.get(k, '(absent)')!r} -> {args_b.get(k, '(absent)')!r}"
                 for k in sorted(set(args_a) | set(args_b)) if args_a.get(k, "(absent)") != args_b.get(k, "(absent)")]
    tensors = sum(1 for _ in _tensors(a))
    return diffs, arg_notes, tensors


def _tensors(x):
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


def pairs(a, b):
    if os.path.isfile(a):
        return [(a, b)]
    found = sorted(glob.glob(os.path.join(a, "**", "checkpoint.pth.tar"), recursive=True))
    if not found:
        raise UsageError(f"no checkpoint.pth.tar under {a}")
    return [(p, os.path.join(b, os.path.relpath(p, a))) for p in found]


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", help="a checkpoint, or a folder of runs")
    p.add_argument("after", help="the same, after the change")
    a = p.parse_args(argv)
    failed = 0
    with one_line_errors(CheckpointError):  # bad input: one line, exit status 2
        found = pairs(a.before, a.after)
    for x, y in found:
        if not os.path.isfile(y):
            print(f"MISSING  {y}")
            failed += 1
            continue
        with one_line_errors(CheckpointError):
            diffs, arg_notes, n = compare(x, y)
        name = os.path.relpath(x, a.before) if os.path.isdir(a.before) else x
        print(f"{'IDENTICAL' if not diffs else 'DIFFERENT'}  {name}: {n} tensors compared"
              + (f", {len(diffs)} differences, e.g. {'; '.join(diffs[:4])}" if diffs else ""))
        for note in arg_notes:
            print(f"           args {note}")
        failed += bool(diffs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
