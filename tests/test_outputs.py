"""The output guard, generated: every command's every output flag pointed at every input it reads, at a file inside
the dataset root and at existing files it did not write (a user's, another run's history, a sweep's record).  Each
case must end with exit status 2 and one error line naming the flag, and every file must keep its checksum.

The cases come from the parsers' declarations (``add_input`` / ``add_output``): a new output flag or input is
tested without a line here, and a path-like flag that declares neither fails ``test_every_path_flag_is_declared``.
"""
import hashlib
import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_random_checkpoint
from PIL import Image

from dataloaders.synthetic import generate
from utils.outputs import Outputs, stamp, written_by

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--dataset", "synthetic", "--base-size", "32", "--crop-size", "32", "--batch-size", "4", "--workers", "0",
        "--no-pretrained", "--no-cuda", "--epochs", "1"]
PATHLIKE = ("path", "dir", "out", "json", "file", "checkpoint", "input", "resume", "teacher", "student", "labels",
            "markdown", "work", "table", "stats", "save", "models")


def checksums(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in Path(folder).rglob("*")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, checkpoints, photos and their labels, and files this project's commands must never replace."""
    tmp = tmp_path_factory.mktemp("outputs")
    root = generate(tmp / "data", n_train=8, n_val=2, size=32, seed=0)
    f = tmp / "files"
    f.mkdir()
    teacher = save_random_checkpoint(f / "teacher.pth.tar", "resnet18")
    torch.manual_seed(0)
    from modeling import DeepLab

    student = f / "student.pth.tar"
    torch.save({"state_dict": DeepLab(num_classes=7, backbone="resnet18").state_dict(), "epoch": 1,
                "args": {"backbone": "resnet18", "dataset": "synthetic", "kd": True, "crop_size": 32}}, student)
    (f / "photos").mkdir()
    (f / "labels").mkdir()
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(f / "photos" / f"p{i}.png")
        Image.fromarray(np.full((24, 24), i, np.uint8), mode="L").save(f / "labels" / f"p{i}.png")
    (f / "mine.json").write_text(json.dumps({"a user's": "notes"}))
    history = f / "run" / "synthetic" / "x" / "experiment_0" / "history.json"
    history.parent.mkdir(parents=True)
    history.write_text("[]")
    record = f / "old-sweep" / "runs" / "a" / "seed1" / "result.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"written_by": stamp("sweep.py", "record"), "cmd": ["train.py"], "best_mIoU": 0.5}))
    (tmp / "never").mkdir()  # where the valid outputs would go: it stays empty
    return {"tmp": tmp, "root": Path(root), "teacher": teacher, "student": student, "photos": f / "photos",
            "labels": f / "labels", "foreign": [f / "mine.json", history, record], "work": tmp / "never"}


def clis(w):
    """Every command that writes: (its parser, a run of argv, a valid argv)."""
    import demo
    import sweep
    from training import get_args_parser, main
    from utils.cli import one_line_errors

    out, teacher, student = w["work"], str(w["teacher"]), str(w["student"])

    def script(name):
        module = importlib.import_module(name)
        return module.get_args_parser, lambda argv: module.main(module.get_args_parser().parse_args(argv))

    def run_sweep(argv):
        with one_line_errors():
            sweep.main(sweep.parse(argv))

    def run_demo(argv):
        with one_line_errors():
            demo.main_demo(demo.get_demo_parser().parse_args(argv))

    train = {kd: (lambda kd=kd: get_args_parser(kd), lambda argv, kd=kd: main(get_args_parser(kd).parse_args(argv),
                                                                             kd=kd)) for kd in (False, True)}
    return {
        "train.py": (*train[False], [*DATA, "--backbone", "resnet18", "--run-dir", f"{out}/run", "--resume", student,
                                     "--ft"]),
        "train_kd.py": (*train[True], [*DATA, "--backbone", "resnet18", "--run-dir", f"{out}/run", "--teacher_path",
                                       teacher, "--resume", student, "--ft"]),
        "eval.py": (*script("eval"), ["--checkpoint", student, "--dataset", "synthetic", "--no-cuda", "--json",
                                      f"{out}/m.json", "--save-vis", f"{out}/vis"]),
        "predict.py": (*script("predict"), ["--checkpoint", student, "--input", str(w["photos"]), "--output",
                                            f"{out}/pred", "--no-cuda"]),
        "export.py": (*script("export"), ["--checkpoint", student, "--format", "pt2", "--output", f"{out}/m.pt2",
                                          "--no-check"]),
        "attention_maps.py": (*script("attention_maps"), [
            "--student", student, "--teacher", teacher, "--input", str(w["photos"]), "--output", f"{out}/maps",
            "--stats", f"{out}/s.json", "--labels", str(w["labels"]), "--no-cuda"]),
        "probe_taps.py": (*script("probe_taps"), ["--checkpoint", student, teacher, "--dataset", "synthetic",
                                                  "--output", f"{out}/probe.json"]),
        "sweep.py": (sweep.get_args_parser, run_sweep, [
            "--out", f"{out}/sw", "--seeds", "1", "--table", f"{out}/table", "--run", "a",
            f"train_kd.py --teacher_path {teacher}", "--", *DATA]),
        "demo.py": (demo.get_demo_parser, run_demo, ["--out", f"{out}/demo", "--no-cuda"]),
        "benchmarks/cost.py": (*script("benchmarks.cost"), [
            "--models", student, "--size", "33", "--reps", "0", "--device", "cpu", "--json", f"{out}/c.json",
            "--markdown", f"{out}/c.md"]),
        "benchmarks/step_time.py": (*script("benchmarks.step_time"), ["--device", "cpu", "--crop", "32", "--json",
                                                                      f"{out}/st.json"]),
        "benchmarks/throughput.py": (*script("benchmarks.throughput"), ["--no-cuda", "--work", f"{out}/tp",
                                                                        "--json", f"{out}/tp.json"]),
        "benchmarks/gpu_check.py": (*script("benchmarks.gpu_check"), ["--device", "cpu", "--work", f"{out}/gc",
                                                                      "--json", f"{out}/gc.json"]),
        "dataloaders.synthetic": (*script("dataloaders.synthetic"), ["--out", f"{out}/gen"]),
    }


def value_of(argv, flag):
    """The values given to ``flag`` before a ``--`` (nargs="+" flags: all of them)."""
    words = argv[:argv.index("--")] if "--" in argv else argv
    if flag not in words:
        return []
    values = []
    for word in words[words.index(flag) + 1:]:
        if word.startswith("--"):
            break
        values.append(word)
    return values


def with_value(argv, flag, value):
    words, rest = (argv[:argv.index("--")], argv[argv.index("--"):]) if "--" in argv else (argv, [])
    i = words.index(flag)
    return words[:i + 1] + [value] + words[i + 2:] + rest


def inputs_of(name, parser, argv, w):
    """The paths a command's argv reads, from its parser's declarations (a sweep: its rows'), expanded: a
    folder's files, a dataset's root."""
    found = []
    if name == "sweep.py":
        from training import get_args_parser

        rows = [value_of(argv, "--run")[1].split()]
        return [p for row in rows for p in inputs_of("train_kd.py", get_args_parser(kd=True), row[1:] + argv[
            argv.index("--") + 1:], w)]
    for dest, (flag, kind) in parser.inputs.items():
        values = value_of(argv, flag) or ([str(parser.get_default(dest))] if parser.get_default(dest) else [])
        if kind == "dataset":
            found.append(w["root"])
            continue
        for value in values:
            p = Path(value)
            if p.exists():
                found += [p] + (sorted(p.iterdir()) if p.is_dir() else [])
    return found


def cases(w):
    for name, (parser_of, run, argv) in clis(w).items():
        parser = parser_of()
        targets = inputs_of(name, parser, argv, w) + [w["root"] / "classes.txt"] + w["foreign"]
        for flag, _ in parser.outputs.values():
            for target in dict.fromkeys(targets):
                yield name, flag, run, argv if flag in argv else argv + [flag, "x"], target


def test_every_output_pointed_at_an_input_or_a_file_it_did_not_write_is_refused_and_nothing_changes(
        world, monkeypatch, capsys):
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", str(world["root"]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(world["tmp"])
    before = checksums(world["tmp"])
    failures, tried, per_cli = [], 0, {}
    for name, flag, run, argv, target in cases(world):
        capsys.readouterr()
        try:
            run(with_value(argv, flag, str(target)))
            code = 0
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        tried += 1
        per_cli[name] = per_cli.get(name, 0) + 1
        if not (code == 2 and len(errors) == 1 and flag in errors[0] and "Traceback" not in err):
            failures.append(f"{name} {flag} {target}: exit {code}, {err.strip()[-300:]!r}")
        assert checksums(world["tmp"]) == before, f"{name} {flag} {target} changed files"
    assert not failures, f"{len(failures)} of {tried}:\n" + "\n".join(failures)
    assert len(per_cli) == len(clis(world)) and min(per_cli.values()) >= 2 and tried >= 100, per_cli
    assert not any(world["work"].iterdir())  # no case wrote an output, not even a folder


def test_every_path_flag_is_declared(world):
    """A flag whose name says it holds a path is declared as an input or an output (or it escapes the guard)."""
    undeclared = []
    for name, (parser_of, _, _) in clis(world).items():
        parser = parser_of()
        declared = set(parser.inputs) | set(parser.outputs)
        for action in parser._actions:
            if action.dest in declared or action.nargs == 0 or action.dest in ("help", "run", "phase", "launcher"):
                continue
            if any(word in action.dest for word in PATHLIKE) and action.type in (None, str) and not action.choices:
                undeclared.append(f"{name} --{action.dest}")
    assert not undeclared, undeclared


def test_rerunning_over_its_own_outputs_needs_no_flag_and_overwrite_replaces_only_files_that_are_not_inputs(tmp_path):
    """The stamp says who wrote a file and for which flag: the same command and flag may replace it, nobody else
    without --overwrite, and an input never."""
    data = tmp_path / "data.json"
    data.write_text("{}")
    out = tmp_path / "out.json"
    guard = Outputs("eval.py").reads("--checkpoint", str(data)).writes("--json", str(out)).check()
    guard.write_json(str(out), {"mIoU": 0.5})
    assert written_by(str(out)) == "attnfd eval.py --json" and json.loads(out.read_text())["mIoU"] == 0.5
    Outputs("eval.py").writes("--json", str(out)).check()  # its own: accepted
    for other in (Outputs("probe_taps.py").writes("--output", str(out)), Outputs("eval.py").writes("--save-vis",
                                                                                                   str(out))):
        with pytest.raises(ValueError, match="was not written by"):
            other.check()
    Outputs("probe_taps.py", overwrite=True).writes("--output", str(out)).check()
    with pytest.raises(ValueError, match="is also --checkpoint"):
        Outputs("eval.py", overwrite=True).reads("--checkpoint", str(data)).writes("--json", str(data)).check()
    with pytest.raises(RuntimeError, match="did not declare"):
        guard.write_json(str(tmp_path / "undeclared.json"), {})
    # every writer stamps: PNG, figure, Markdown, log; and the mode is the umask's
    from PIL import Image as PILImage

    folder = Outputs("predict.py").writes_folder("--output", str(tmp_path / "o"), ["a.png", "b.png", "c.md", "d.log"])
    folder.check()
    folder.write_png(str(tmp_path / "o" / "a.png"), PILImage.new("P", (4, 4)))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.write_figure(str(tmp_path / "o" / "b.png"), plt.figure())
    folder.write_text(str(tmp_path / "o" / "c.md"), "| a |\n")
    with folder.open_log(str(tmp_path / "o" / "d.log")) as f:
        f.write("line\n")
    for name in ("a.png", "b.png", "c.md", "d.log"):
        assert written_by(str(tmp_path / "o" / name)) == "attnfd predict.py --output", name
        mask = os.umask(0)
        os.umask(mask)
        assert (tmp_path / "o" / name).stat().st_mode & 0o777 == 0o666 & ~mask or name == "d.log"
