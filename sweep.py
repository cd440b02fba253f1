"""Run a grid of training runs x seeds and write the results table, e.g.

    python sweep.py --out sweeps/demo --seeds 1 2 3 4 5 --jobs 2 \\
        --run baseline "train.py --backbone resnet18" \\
        --run attnfd "train_kd.py --backbone resnet18 --teacher_path T.pth.tar" \\
        -- --dataset synthetic --epochs 20 --no-pretrained

Each (run, seed) trains in ``DIR/runs/<NAME>/seed<S>`` (``--run-dir``, ``--seed`` set here; COMMON
ARGS follow the run's own) with its log in ``DIR/logs/<NAME>-seed<S>.log``.  The outcome is
``DIR/results.json`` (``{"runs": {NAME: {"<seed>": best val mIoU}}, "final": {... last epoch's}, "commands": ...,
"failed": ...}``), ``DIR/results.md`` (per run: n, best- and final-epoch mean ± std, per seed, and against the
first run (or the row ``--compare`` names) the paired difference with its 95% confidence interval, paired t-test and
Wilcoxon p-values and the seeds won) and ``DIR/results.png`` (``--table PREFIX``: PREFIX.json/.md/.png instead, so
that several tables can share one folder of runs and its finished cells).  The files are rewritten after every run,
so a sweep in progress can be read (``--report-only`` rewrites them from the finished runs without
training).  A finished run is skipped when the same command is run again; a failed run is reported
as failed and retried.  A finished run is never deleted: a sweep whose command for a finished cell changed is
refused, naming the cell, unless ``--rerun-changed`` (the old cell is moved to ``<cell>.old-<k>``).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from utils.cells import finished, last_checkpoint, last_line, result_of, set_aside, validated
from utils.cli import ArgumentParser, UsageError, number, one_line_errors
from utils.saver import write_text_atomic
from utils.tables import plot, table

ROOT = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ("train.py", "train_kd.py")
RESERVED = ("--seed", "--run-dir")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def get_args_parser():
    p = ArgumentParser(
        description="Runs x seeds -> results table. Usage: python sweep.py --out DIR --seeds 1 2 3 "
                    "--run NAME \"SCRIPT ARGS\" [--run ...] -- COMMON ARGS")
    p.add_argument("--out", required=True, help="sweep folder (runs, logs, results.*)")
    p.add_argument("--seeds", type=number(int, 0), nargs="+", required=True)
    p.add_argument("--run", nargs=2, action="append", required=True, metavar=("NAME", "SCRIPT ARGS"),
                   help="a row of the table: a name and 'train.py ...' or 'train_kd.py ...'; the first is the "
                        "reference the others are compared with")
    p.add_argument("--jobs", type=number(int, 1), default=1,
                   help="trainings at once (they share a GPU, or split the CPU threads unless OMP_NUM_THREADS is set)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    p.add_argument("--rerun-changed", action="store_true",
                   help="retrain cells that finished with another command, moving each old cell to <cell>.old-<k> "
                        "(without it such a sweep is refused: a finished run is never replaced)")
    p.add_argument("--report-only", action="store_true",
                   help="write the tables from the runs that already finished; train nothing")
    p.add_argument("--launcher", default=None, metavar="COMMAND",
                   help="what starts a training instead of this Python, e.g. 'torchrun --standalone "
                        "--nproc_per_node 8' (every run on all GPUs; with --jobs 1)")
    p.add_argument("--resume", action="store_true",
                   help="a cell that stopped before finishing goes on from its last checkpoint (--resume) instead of "
                        "starting over: for long runs")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("NAME", "REF"),
                   help="compare the run NAME with the run REF (same seeds) instead of with the first run, e.g. "
                        "--compare attnfd-amp attnfd")
    p.add_argument("--table", default=None, metavar="PREFIX",
                   help="write the tables as PREFIX.json/.md/.png instead of DIR/results.*: several tables over "
                        "one folder of runs, sharing its finished cells")
    p.add_argument("--paper", nargs=2, action="append", default=[], metavar=("NAME", "MIOU"),
                   help="a published mIoU (%%) for the run NAME: the table shows it and its gain over the first "
                        "run's published number beside the measured ones")
    return p


def parse(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    common = []
    if "--" in argv:
        i = argv.index("--")
        argv, common = argv[:i], argv[i + 1:]
    args = get_args_parser().parse_args(argv)
    args.common = common
    names = [n for n, _ in args.run]
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file; give a folder")
    for name, command in args.run:
        if not NAME.match(name):
            raise UsageError(f"--run name {name!r}: use letters, digits and . _ + - (it names a folder)")
        words = split(name, command)
        if not words or os.path.basename(words[0]) not in SCRIPTS:
            raise UsageError(f"--run {name}: the command must start with train.py or train_kd.py, "
                             f"got {command!r}")
    if len(set(names)) != len(names):
        raise UsageError("--run names must be unique")
    for i, (name, value) in enumerate(args.paper):
        try:
            args.paper[i] = (name, float(value))
        except ValueError:
            args.paper[i] = (name, -1.0)
        if name not in names or not 0 <= args.paper[i][1] <= 100:
            raise UsageError(f"--paper {name} {value}: give the name of a --run and a published mIoU in % (0-100)")
    for name, ref in args.compare:
        if name not in names or ref not in names or name == ref:
            raise UsageError(f"--compare {name} {ref}: give the names of two different --run rows")
    if args.table is not None and (not args.table or os.path.isdir(args.table)):
        raise UsageError(f"--table {args.table!r}: give a file prefix (PREFIX.json/.md/.png are written), not a folder")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError("--seeds must be unique")
    for flag in RESERVED:
        if any(w == flag or w.startswith(flag + "=") for n, c in args.run for w in split(n, c) + common):
            raise UsageError(f"{flag} is set by sweep.py for each run; remove it from the run/common args")
    return args


def split(name, command):
    """The words of a ``--run`` command (shell quoting); a one-line UsageError for an unclosed quote."""
    try:
        return shlex.split(command)
    except ValueError as e:
        raise UsageError(f"--run {name}: {e} in {command!r}") from None


def command_for(args, name, command, seed):
    words = split(name, command)
    script = os.path.join(ROOT, os.path.basename(words[0]))
    run_dir = os.path.join(args.out, "runs", name, f"seed{seed}")
    launch = split("--launcher", args.launcher) if args.launcher else [sys.executable]
    return [*launch, script, *words[1:], *args.common, "--seed", str(seed), "--run-dir", run_dir], run_dir


def changed_cells(args, cells):
    """The cells that finished with another command than this sweep's: rerunning would replace them."""
    out = []
    for name, command, seed in cells:
        cmd, run_dir = command_for(args, name, command, seed)
        record = result_of(run_dir)
        if record is not None and record["cmd"] != cmd[1:]:
            out.append((name, seed, run_dir))
    return out


def train_one(args, name, command, seed, env):
    """Run one training unless an identical finished run exists; return its record.  A finished cell of another
    command is set aside (``--rerun-changed``; main refuses it otherwise); an unfinished one (a failed or killed
    attempt of this sweep) is retried from scratch."""
    cmd, run_dir = command_for(args, name, command, seed)
    record = finished(cmd, run_dir)
    if record is not None:
        return record
    go_on = last_checkpoint(run_dir) if args.resume and result_of(run_dir) is None else None
    if result_of(run_dir) is not None:
        set_aside(run_dir)
    elif os.path.isdir(run_dir) and go_on is None:
        shutil.rmtree(run_dir)  # no result.json: an attempt that failed or was killed
    os.makedirs(run_dir, exist_ok=True)
    log = os.path.join(args.out, "logs", f"{name}-seed{seed}.log")
    start = time.time()
    launched = cmd + (["--resume", go_on] if go_on else [])
    with open(log, "a" if go_on else "w") as f:
        f.write(shlex.join(launched) + "\n")
        f.flush()
        rc = subprocess.call(launched, stdout=f, stderr=subprocess.STDOUT, cwd=os.getcwd(), env=env)
    record = {"cmd": cmd[1:], "returncode": rc, "seconds": round(time.time() - start, 1), "log": log}
    values = validated(run_dir) if rc == 0 else []
    miou = max(values, default=None)
    if rc == 0 and miou is None:
        rc, record["returncode"] = -1, -1
        record["error"] = "finished without a validated epoch (check --no-val / --eval-interval)"
    if rc == 0:
        record["best_mIoU"], record["final_mIoU"] = miou, values[-1]  # the field's best epoch; the last one
        write_text_atomic(os.path.join(run_dir, "result.json"), json.dumps(record, indent=1))
    else:
        record.setdefault("error", f"exit {rc}: {last_line(log)}")
    return record


def final_of(args, name, seed, record):
    """A finished cell's last-epoch mIoU: its record's, or (a cell finished before records kept it) its history's."""
    if "final_mIoU" in record or "best_mIoU" not in record:
        return record.get("final_mIoU")
    values = validated(command_for(args, name, dict(args.run)[name], seed)[1])
    return values[-1] if values else None


def summarize(args, records):
    """results.json / .md / .png from {(name, seed): record}."""
    names = [n for n, _ in args.run]
    runs = {n: {str(s): records[n, s].get("best_mIoU") for s in args.seeds if (n, s) in records} for n in names}
    final = {n: {str(s): final_of(args, n, s, records[n, s]) for s in args.seeds if (n, s) in records} for n in names}
    failed = {n: {str(s): records[n, s]["error"] for s in args.seeds if (n, s) in records and "error" in records[n, s]}
              for n in names}
    result = {"runs": runs, "final": final, "commands": dict(args.run), "common": shlex.join(args.common),
              "seeds": args.seeds,
              "paper": {n: v for n, v in args.paper}, "versus": {n: r for n, r in args.compare},
              "failed": {n: f for n, f in failed.items() if f},
              "seconds": {n: {str(s): records[n, s]["seconds"] for s in args.seeds
                              if (n, s) in records and "seconds" in records[n, s]} for n in names}}
    prefix = tables_prefix(args)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    write_text_atomic(prefix + ".json", json.dumps(result, indent=1))
    write_text_atomic(prefix + ".md", table(result))
    plot(result, prefix + ".png")
    return result


def tables_prefix(args):
    return args.table if args.table is not None else os.path.join(args.out, "results")


def main(args):
    cells = [(name, command, seed) for seed in args.seeds for name, command in args.run]
    if args.dry_run:
        for name, command, seed in cells:
            print(shlex.join(command_for(args, name, command, seed)[0]))
        return None
    if args.report_only:
        records = {(n, s): r for n, c, s in cells if (r := finished(*command_for(args, n, c, s))) is not None}
        result = summarize(args, records)
        print(table(result))
        print(f"{len(records)} of {len(cells)} runs finished; wrote {tables_prefix(args)}.json, .md, .png")
        return result
    changed = changed_cells(args, cells)
    if changed and not args.rerun_changed:
        name, seed, run_dir = changed[0]
        raise UsageError(f"--run {name} seed {seed} finished in {run_dir} with another command than this sweep's "
                         f"({len(changed)} such cell(s)); use another --out, or --rerun-changed to retrain them with "
                         f"the old cells moved aside")
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "OMP_NUM_THREADS" not in os.environ:  # several CPU runs at once: split the cores between them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    records, lock = {}, threading.Lock()
    bar = tqdm(total=len(cells), desc="sweep", dynamic_ncols=True)

    def work(cell):
        name, command, seed = cell
        record = train_one(args, name, command, seed, env)
        with lock:
            records[name, seed] = record
            summarize(args, records)
            state = ("skipped, done before" if record.get("skipped") else
                     f"{record['seconds']:.0f}s") if "error" not in record else "FAILED: " + record["error"]
            miou = record.get("best_mIoU")
            bar.write(f"{name} seed {seed}: " + (f"mIoU {100 * miou:.2f} ({state})" if miou is not None else state))
            bar.update()

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(work, cells))
    bar.close()
    result = summarize(args, records)
    print(table(result))
    print(f"Wrote {tables_prefix(args)}.json, .md, .png")
    return result


if __name__ == "__main__":
    with one_line_errors():
        result = main(parse())
    sys.exit(1 if result and result["failed"] else 0)
