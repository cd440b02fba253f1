"""Run a grid of training runs x seeds and write the results table, e.g.

    python sweep.py --out sweeps/demo --seeds 1 2 3 4 5 --jobs 2 \\
        --run baseline "train.py --backbone resnet18" \\
        --run attnfd "train_kd.py --backbone resnet18 --teacher_path T.pth.tar" \\
        -- --dataset synthetic --epochs 20 --no-pretrained

Each (run, seed) trains in ``DIR/runs/<NAME>/seed<S>`` (``--run-dir``, ``--seed`` set here; COMMON
ARGS follow the run's own, and may not repeat one of its flags) with its log in ``DIR/logs/<NAME>-seed<S>.log``;
``cell.json`` there records the command that started it.  The outcome is ``DIR/results.json`` (``{"runs": {NAME:
{"<seed>": best val mIoU}}, "final": {... last epoch's}, "commands": ..., "failed": ..., "stopped": ...}``),
``DIR/results.md`` (per run: n, best- and final-epoch mean ± std, per seed, and against the first run (or the row
``--compare`` names) the paired difference with its 95% confidence interval, paired t-test and Wilcoxon p-values
and the seeds won) and ``DIR/results.png`` (``--table PREFIX``: PREFIX.json/.md/.png instead, so that several
tables can share one folder of runs and its finished cells).  The files are rewritten after every run, so a sweep
in progress can be read (``--report-only`` rewrites them from the finished runs without training).

Every row's arguments are checked before anything trains.  A finished run is skipped when the same command is run
again (however ``--out`` is spelled); a run whose training finished but whose record was not written is recorded
from its checkpoint; a failed run is reported and retried.  A finished run is never deleted: a sweep whose
command for a cell changed is refused, naming the cell, unless ``--rerun-changed`` (the old cell is moved to
``<cell>.old-<k>``); a checkpoint is never deleted either (an attempt is retried with its old folder moved aside).
SIGTERM / SIGINT are passed on to the running trainings, which save; the sweep records them as stopped and exits
with 128 + the signal (``--resume`` goes on from their checkpoints).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr
from io import StringIO

from tqdm import tqdm

from utils import cells as cell_folder
from utils.cli import ArgumentParser, UsageError, number, one_line_errors
from utils.outputs import Outputs
from utils.tables import earlier_table, plot, table

ROOT = os.path.dirname(os.path.abspath(__file__))
SCRIPTS, CELL = cell_folder.SCRIPTS, cell_folder.CELL
RESERVED = ("--seed", "--run-dir", "--resume")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def get_args_parser():
    p = ArgumentParser(
        description="Runs x seeds -> results table. Usage: python sweep.py --out DIR --seeds 1 2 3 "
                    "--run NAME \"SCRIPT ARGS\" [--run ...] -- COMMON ARGS")
    p.add_output("--out", kind="folder", required=True, help="sweep folder (runs, logs, results.*)")
    p.add_argument("--seeds", type=number(int, 0), nargs="+", required=True)
    p.add_argument("--run", nargs=2, action="append", required=True, metavar=("NAME", "SCRIPT ARGS"),
                   help="a row of the table: a name and 'train.py ...' or 'train_kd.py ...'; the first is the "
                        "reference the others are compared with")
    p.add_argument("--jobs", type=number(int, 1), default=1,
                   help="trainings at once (they share a GPU, or split the CPU threads unless OMP_NUM_THREADS is set)")
    p.add_argument("--dry-run", action="store_true", help="print what each cell will do (its command) and exit")
    p.add_argument("--rerun-changed", action="store_true",
                   help="retrain cells that finished or started with another command, moving each old cell to "
                        "<cell>.old-<k> (without it such a sweep is refused: a finished run is never replaced)")
    p.add_argument("--report-only", action="store_true",
                   help="write the tables from the runs that already finished; train nothing")
    p.add_argument("--launcher", default=None, metavar="COMMAND",
                   help="what starts a training instead of this Python, e.g. 'torchrun --standalone "
                        "--nproc_per_node 8' (every run on all GPUs; with --jobs 1)")
    p.add_argument("--resume", action="store_true",
                   help="a cell that stopped before finishing goes on from its last checkpoint (--resume) instead of "
                        "starting over: for long runs; refused for a cell started with another command")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("NAME", "REF"),
                   help="compare the run NAME with the run REF (same seeds) instead of with the first run, e.g. "
                        "--compare attnfd-amp attnfd")
    p.add_output("--table", kind="prefix", default=None, metavar="PREFIX",
                 help="write the tables as PREFIX.json/.md/.png instead of DIR/results.*: several tables over "
                      "one folder of runs, sharing its finished cells")
    p.add_argument("--paper", nargs=2, action="append", default=[], metavar=("NAME", "MIOU"),
                   help="a published mIoU (%%) for the run NAME: the table shows it and its gain over the first "
                        "run's published number beside the measured ones")
    p.add_argument("--match-budget", default=None, metavar="ROW",
                   help="equal compute: every other row R also trains as a row 'R.<by>' for the iterations that "
                        "give it ROW's mean training cost, from the costs its own cells measured (run first, at "
                        "the common args' length); its lr schedule runs over those iterations")
    p.add_argument("--budget-by", default="flops", choices=["flops", "time"],
                   help="the cost --match-budget matches: FLOPs of the training steps (torch.utils.flop_counter: the "
                        "same on every machine) or wall seconds of the training epochs on this machine (default flops)")
    p.add_overwrite()
    return p


def parse(argv=None):
    """The sweep's arguments, every row's training arguments checked (as the training would check them)."""
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
    if args.table is not None and (not args.table or os.path.exists(args.table)):
        raise UsageError(f"--table {args.table!r}: give a file prefix (PREFIX.json/.md/.png are written), not "
                         f"{'a folder' if os.path.isdir(args.table) else 'an existing file'}")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError("--seeds must be unique")
    for flag in RESERVED:
        if any(w == flag or w.startswith(flag + "=") for n, c in args.run for w in split(n, c) + common):
            raise UsageError(f"{flag} is set by sweep.py for each run; remove it from the run/common args")
    if args.match_budget is not None:
        matched = [budget_name(args, n) for n in names if n != args.match_budget]
        if args.match_budget not in names or not matched:
            raise UsageError(f"--match-budget {args.match_budget}: give the name of a --run row, beside at least one "
                             f"other row")
        if set(matched) & set(names):
            raise UsageError(f"--match-budget names its rows <name>.{args.budget_by}, and --run "
                             f"{sorted(set(matched) & set(names))[0]} already is one; rename that row")
        if any(w == "--iterations" or w.startswith("--iterations=") for n, c in args.run for w in split(n, c) + common):
            raise UsageError("--match-budget sets --iterations for its rows; remove --iterations from the run/common "
                             "args (the rows at equal iterations train the common --epochs)")
    if args.launcher is not None:
        launcher = split("--launcher", args.launcher)
        if not launcher or shutil.which(launcher[0]) is None:
            raise UsageError(f"--launcher {args.launcher!r}: {launcher[0] if launcher else 'no command'} is not a "
                             f"command found on PATH")
    args.trainings = {name: training_args(name, split(name, command), common) for name, command in args.run}
    args.given = list(args.run)  # the rows as given (--match-budget adds its own to args.run)
    return args


def split(name, command):
    """The words of a ``--run`` command (shell quoting); a one-line UsageError for an unclosed quote."""
    try:
        return shlex.split(command)
    except ValueError as e:
        raise UsageError(f"--run {name}: {e} in {command!r}") from None


def training_args(name, words, common):
    """The row's training arguments as its script will parse and resolve them (a bad value is refused now, not
    after other rows trained); a flag given both in the row and among the common args is refused (the common one
    would silently win)."""
    from training import get_args_parser as training_parser
    from training import resolve_args

    kd = os.path.basename(words[0]) == "train_kd.py"
    parser = training_parser(kd)
    parser.prog = os.path.basename(words[0])
    options = parser._option_string_actions
    flags = [{w.split("=")[0] for w in part} & set(options) for part in (words[1:], common)]
    dests = [{options[f].dest for f in part} for part in flags]
    both = sorted(dests[0] & dests[1])
    if both:
        raise UsageError(f"--run {name} sets --{both[0]} and the common args set it too (the common value would "
                         f"silently win); keep one")
    err = StringIO()
    try:
        with redirect_stderr(err):
            parsed = parser.parse_args(words[1:] + common + ["--seed", "0"])
        resolve_args(parsed, kd)
    except SystemExit:
        raise UsageError(f"--run {name}: {err.getvalue().strip().removeprefix('error: ')}") from None
    except UsageError as e:
        raise UsageError(f"--run {name}: {e}") from None
    return parsed


def command_for(args, name, command, seed):
    words = split(name, command)
    script = os.path.join(ROOT, os.path.basename(words[0]))
    run_dir = os.path.join(args.out, "runs", name, f"seed{seed}")
    launch = split("--launcher", args.launcher) if args.launcher else [sys.executable]
    return [*launch, script, *words[1:], *args.common, "--seed", str(seed), "--run-dir", run_dir], run_dir


def plan(args, name, command, seed):
    """What to do with one cell (``utils.cells.plan``)."""
    cmd, run_dir = command_for(args, name, command, seed)
    return cell_folder.plan(name, seed, cmd, run_dir, os.path.join(args.out, "logs", f"{name}-seed{seed}.log"),
                            args.resume)


def budget_name(args, name):
    """The name of row ``name`` trained at ``--match-budget``'s cost."""
    return f"{name}.{args.budget_by}"


def budget_logs(args):
    """The logs of the budget-matched cells (known before their iterations are)."""
    return [os.path.join(args.out, "logs", f"{budget_name(args, n)}-seed{s}.log")
            for s in args.seeds for n, _ in args.given if args.match_budget not in (None, n)]


def budgets(args, records):
    """{row: iterations} that give each row other than ``--match-budget`` the reference row's mean training cost
    (``--budget-by``), from the finished cells' records: the reference's mean cost over its seeds, divided by the
    row's mean cost per iteration.  A row (or the reference) without a measured cost for any seed is left out."""
    key = "flops" if args.budget_by == "flops" else "train_seconds"

    def measured(name):
        return [records[name, s] for s in args.seeds
                if (name, s) in records and records[name, s].get(key) and records[name, s].get("iterations")]

    ref = measured(args.match_budget)
    if not ref:
        return {}
    target = sum(r[key] for r in ref) / len(ref)
    out = {}
    for name, _ in args.given:
        rows = measured(name)
        if name != args.match_budget and rows:
            per_iteration = sum(r[key] / r["iterations"] for r in rows) / len(rows)
            out[name] = max(1, round(target / per_iteration))
    return out


def budget_cells(args, records):
    """The budget-matched rows (appended to ``args.run`` after their row, once known) and their cells."""
    iterations = budgets(args, records)
    rows = []
    for name, command in args.given:
        if name in iterations:
            rows.append((budget_name(args, name), f"{command} --iterations {iterations[name]}"))
    args.run = list(args.given)
    for matched, command in rows:
        at = [n for n, _ in args.run].index(matched.rsplit(".", 1)[0]) + 1
        args.run.insert(at, (matched, command))
    args.budget = {"ref": args.match_budget, "by": args.budget_by,
                   "iterations": {budget_name(args, n): k for n, k in iterations.items()}}
    return [plan(args, name, command, seed) for seed in args.seeds for name, command in rows]


def train_one(args, cell, env, outputs, supervisor):
    """Run (or record) one cell; return its record, or None when a signal came before it started."""
    if cell.action == "skip":
        return cell.record
    if cell.action == "record":
        return write_record(outputs, cell, {"cmd": cell.cmd[1:], "returncode": 0, "log": cell.log,
                                            "recorded_from": cell.checkpoint})
    if cell.action == "changed" or (cell.stale and cell.checkpoint):
        cell_folder.set_aside(cell.run_dir)  # --rerun-changed, or an attempt with a checkpoint: never deleted
    elif cell.stale:
        shutil.rmtree(cell.run_dir)  # this sweep's attempt that saved nothing
    start = time.time()
    outputs.write_json(os.path.join(cell.run_dir, CELL), {"cmd": cell.cmd[1:]})
    with outputs.open_log(cell.log, append=cell.action == "resume") as f:
        f.write(shlex.join(cell.launched) + "\n")
        f.flush()
        try:
            child = supervisor.start(cell.launched, stdout=f, stderr=subprocess.STDOUT, cwd=os.getcwd(), env=env)
        except OSError as e:  # the launcher vanished, a full process table ...
            return {"cmd": cell.cmd[1:], "returncode": -1, "log": cell.log, "error": f"cannot start it: {e}"}
        if child is None:
            return None
        rc = supervisor.wait(child)
    record = {"cmd": cell.cmd[1:], "returncode": rc, "seconds": round(time.time() - start, 1), "log": cell.log}
    if rc != 0 and supervisor.signal is not None:
        where = cell_folder.last_checkpoint(cell.run_dir)
        record["stopped"] = f"{supervisor.signal.name}; " + (f"saved {where}: rerun with --resume to go on" if where
                                                             else "no checkpoint yet")
        return record
    if rc == 0:
        return write_record(outputs, cell, record)
    record["error"] = f"exit {rc}: {cell_folder.last_line(cell.log)}"
    return record


def write_record(outputs, cell, record):
    """The cell's result.json from its validated epochs (an error instead when it has none)."""
    values = cell_folder.validated(cell.run_dir)
    if not values:
        return {**record, "returncode": -1, "error": "finished without a validated epoch (check --no-val / "
                                                     "--eval-interval)"}
    record = {**record, "best_mIoU": max(values), "final_mIoU": values[-1],  # the field's best epoch; the last one
              **cell_folder.cost(cell.run_dir)}
    outputs.write_json(os.path.join(cell.run_dir, "result.json"), record)
    return record


def final_of(args, name, seed, record):
    """A finished cell's last-epoch mIoU: its record's, or (a cell finished before records kept it) its history's."""
    if "final_mIoU" in record or "best_mIoU" not in record:
        return record.get("final_mIoU")
    values = cell_folder.validated(command_for(args, name, dict(args.run)[name], seed)[1])
    return values[-1] if values else None


def summarize(args, records, outputs):
    """results.json / .md / .png from {(name, seed): record}."""
    names = [n for n, _ in args.run]

    def per_seed(key):
        return {n: {str(s): records[n, s][key] for s in args.seeds if (n, s) in records and key in records[n, s]}
                for n in names}

    result = {"runs": {n: {str(s): records[n, s].get("best_mIoU") for s in args.seeds if (n, s) in records}
                       for n in names},
              "final": {n: {str(s): final_of(args, n, s, records[n, s]) for s in args.seeds if (n, s) in records}
                        for n in names},
              "commands": dict(args.run), "common": shlex.join(args.common), "seeds": args.seeds,
              "paper": {n: v for n, v in args.paper}, "versus": {n: r for n, r in args.compare},
              "failed": {n: f for n, f in per_seed("error").items() if f},
              "stopped": {n: f for n, f in per_seed("stopped").items() if f},
              "seconds": per_seed("seconds"), "train_seconds": per_seed("train_seconds"), "flops": per_seed("flops"),
              "iterations": per_seed("iterations"), "budget": getattr(args, "budget", None)}
    prefix = tables_prefix(args)
    outputs.write_json(prefix + ".json", result)
    outputs.write_text(prefix + ".md", table(result))
    outputs.write_figure(prefix + ".png", plot(result), dpi=120)
    return result


def tables_prefix(args):
    return args.table if args.table is not None else os.path.join(args.out, "results")


def check_inputs(args):
    """Every row's teacher checkpoint and dataset root are there (before anything trains)."""
    from dataloaders import DatasetError, dataset_root

    for name, t in args.trainings.items():
        if hasattr(t, "teacher_path") and not os.path.isfile(t.teacher_path):
            raise UsageError(f"--run {name}: --teacher_path {t.teacher_path}: no checkpoint there")
        try:
            root = dataset_root(t.dataset)
        except DatasetError as e:
            raise UsageError(f"--run {name}: {e}") from None
        if not os.path.isdir(root):
            raise UsageError(f"--run {name}: the {t.dataset} root {root} is not there (edit mypath.py or set "
                             f"ATTNFD_{t.dataset.upper()}_ROOT)")


def guard(args, logs):
    """The sweep's output guard: its folder and table files against every row's inputs (teachers, dataset roots).
    The cells' folders are its own (``plan`` refuses one it did not make; their files are stamped as records), and
    so are its logs and tables, stamped or written by an earlier sweep.py."""
    cells_dir = os.path.realpath(os.path.join(args.out, "runs"))
    if os.path.realpath(tables_prefix(args)).startswith(cells_dir + os.sep):
        raise UsageError(f"--table {args.table} lies inside {cells_dir}, where the cells and their records are; write "
                         f"the tables elsewhere")
    outputs = Outputs("sweep.py", args.overwrite)
    for training in args.trainings.values():
        outputs.reads_dataset(training.dataset, training.use_sbd)
        outputs.reads("--teacher_path", getattr(training, "teacher_path", None))
    outputs.writes_folder("--out", args.out, [os.path.relpath(log, args.out) for log in logs], role="log")
    outputs.writes_run("--out", os.path.join(args.out, "runs"), role="record")
    prefix = tables_prefix(args)
    tables = [prefix + ext for ext in (".json", ".md", ".png")]
    outputs.writes_folder("--table" if args.table is not None else "--out", os.path.dirname(prefix) or ".",
                          [os.path.basename(t) for t in tables], role="--table")
    for path in [log for log in logs if cell_folder.logged_command(log)] + (tables if earlier_table(tables[0]) else []):
        outputs.owns(path, "log" if path.endswith(".log") else "--table")  # written by an older sweep.py
    return outputs.check()


def describe(args, cell):
    """What the dry run says about a cell."""
    what = {"skip": "finished, skipped", "record": f"training finished ({cell.checkpoint}): recorded, not trained",
            "changed": "finished or started with another command: "
            + ("moved aside, then" if args.rerun_changed else "REFUSED without --rerun-changed")}
    print(f"# {cell.name} seed {cell.seed}: {what.get(cell.action, cell.action)}")
    if cell.action in ("start", "resume") or (cell.action == "changed" and args.rerun_changed):
        print(shlex.join(cell.launched))


def refuse_changed(args, cells):
    changed = [c for c in cells if c.action == "changed"]
    if changed and not args.rerun_changed:
        c = changed[0]
        raise UsageError(f"--run {c.name} seed {c.seed} in {c.run_dir} finished or started with another command than "
                         f"this sweep's ({len(changed)} such cell(s)); use another --out, or --rerun-changed to train "
                         f"them again with the old cells moved aside")


def main(args):
    cells = [plan(args, name, command, seed) for seed in args.seeds for name, command in args.run]
    finished = {(c.name, c.seed): c.record for c in cells if c.action == "skip"}
    matched = budget_cells(args, finished) if args.match_budget and len(finished) == len(cells) else []
    if args.dry_run:
        for cell in cells + matched:
            describe(args, cell)
        if args.match_budget and not matched:
            print(f"# then each row R but {args.match_budget} as {budget_name(args, 'R')}: the iterations that match "
                  f"{args.match_budget}'s {args.budget_by}, once the cells above have measured it")
        return None
    outputs = guard(args, [c.log for c in cells] + budget_logs(args))
    if args.report_only:
        records = {(c.name, c.seed): c.record for c in cells if c.action == "skip"}
        if args.match_budget:
            records.update({(c.name, c.seed): c.record for c in budget_cells(args, records) if c.action == "skip"})
        result = summarize(args, records, outputs)
        print(table(result))
        print(f"{len(records)} of {len(cells)} runs finished; wrote {tables_prefix(args)}.json, .md, .png")
        return result
    refuse_changed(args, cells + matched)
    check_inputs(args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "OMP_NUM_THREADS" not in os.environ:  # several CPU runs at once: split the cores between them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    records, lock = {}, threading.Lock()
    bar = tqdm(total=len(cells) + len(budget_logs(args)), desc="sweep", dynamic_ncols=True)
    supervisor = cell_folder.Supervisor(bar.write)

    def work(cell):
        record = train_one(args, cell, env, outputs, supervisor)
        with lock:
            if record is None:  # a signal came before it started
                return
            records[cell.name, cell.seed] = record
            summarize(args, records, outputs)
            state = ("skipped, done before" if record.get("skipped") else "recorded from its checkpoint"
                     if record.get("recorded_from") else "STOPPED: " + record["stopped"] if "stopped" in record else
                     f"{record['seconds']:.0f}s") if "error" not in record else "FAILED: " + record["error"]
            miou = record.get("best_mIoU")
            bar.write(f"{cell.name} seed {cell.seed}: " + (f"mIoU {100 * miou:.2f} ({state})" if miou is not None
                                                           else state))
            bar.update()

    with supervisor.installed(), ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(work, cells))
        if args.match_budget and supervisor.signal is None:  # equal compute, from the costs just measured
            matched = budget_cells(args, records)
            refuse_changed(args, matched)
            bar.write(f"budget: {args.budget_by} of {args.match_budget} -> " + ", ".join(
                f"{n} {k} iterations" for n, k in args.budget["iterations"].items()))
            list(pool.map(work, matched))
    bar.close()
    result = summarize(args, records, outputs)
    print(table(result))
    print(f"Wrote {tables_prefix(args)}.json, .md, .png")
    if supervisor.signal is not None:
        stopped = sum(len(v) for v in result["stopped"].values())
        print(f"Stopped by {supervisor.signal.name}: {stopped} training(s) stopped (saved where a checkpoint is named "
              f"above), {len(cells) + len(matched) - len(records)} not started; rerun with --resume to go on",
              file=sys.stderr)
        raise SystemExit(128 + supervisor.signal)
    return result


if __name__ == "__main__":
    with one_line_errors():
        result = main(parse())
    sys.exit(1 if result and result["failed"] else 0)
