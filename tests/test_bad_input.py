"""Bad and unusual input, round 2, through the real CLIs: every case ends with exit status 2 and one line on
stderr (no traceback), and the folder holding the inputs and runs is byte for byte what it was (nothing
changed, nothing deleted, nothing half-made left behind)."""
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataloaders.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
DATA = ["--dataset", "synthetic", "--base-size", "32", "--crop-size", "32", "--batch-size", "4", "--workers", "0",
        "--no-pretrained", "--no-cuda", "--epochs", "1"]


def checksums(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Inputs a careless user might hand the CLIs: checkpoints of every kind, images, a finished sweep cell."""
    from modeling import DeepLab

    tmp = tmp_path_factory.mktemp("bad")
    root = generate(tmp / "data", n_train=8, n_val=2, size=32, seed=0)
    broken = generate(tmp / "broken", n_train=8, n_val=2, size=32, seed=0)
    (Path(broken) / "JPEGImages" / "synth_00003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    f = tmp / "files"
    f.mkdir()
    torch.manual_seed(0)
    r18 = DeepLab(num_classes=7, backbone="resnet18").state_dict()
    args = {"backbone": "resnet18", "dataset": "synthetic", "batch_size": 4}
    torch.save({"state_dict": r18, "args": {**args, "kd": False}, "epoch": 1}, f / "baseline.pth")
    torch.save({"state_dict": r18, "args": {**args, "kd": True, "attn_lambda": 2.0}, "epoch": 1}, f / "kd.pth")
    torch.save({"state_dict": r18, "args": {**args, "kd": False, "batch_size": 2}, "epoch": 0, "iteration": 1},
               f / "mid_epoch.pth")
    torch.save({"state_dict": {**r18, "decoder.last_conv.8.bias": [0.0] * 7}}, f / "list_in_state_dict.pth")
    torch.save({"state_dict": r18, "args": ["resnet18"]}, f / "args_not_a_dict.pth")
    torch.save({"state_dict": r18, "args": args, "history": {"a": 1}}, f / "history_not_a_list.pth")
    data = (f / "baseline.pth").read_bytes()
    (f / "truncated.pth").write_bytes(data[: len(data) // 2])
    (f / "garbage.pth").write_bytes(b"not a checkpoint")
    torch.save({"state_dict": DeepLab(num_classes=5, backbone="resnet18").state_dict(),
                "args": {"backbone": "resnet18"}}, f / "five_classes.pth")
    torch.save({"state_dict": r18}, f / "r18_no_args.pth")
    torch.save({"state_dict": DeepLab(num_classes=7, backbone="mobilenet").state_dict(),
                "args": {"backbone": "mobilenet", "dataset": "synthetic"}}, f / "mobilenet.pth")
    torch.save({"state_dict": r18, "args": {"backbone": "resnet18", "dataset": "pascal"}}, f / "pascal.pth")
    (f / "a-file").write_text("not a folder")
    (f / "photos").mkdir()
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(f / "photos" / f"p{i}.png")
    cell = tmp / "sweep" / "runs" / "a" / "seed1"
    cell.mkdir(parents=True)
    (cell / "result.json").write_text(json.dumps({"cmd": ["train.py", "--lr", "0.1"], "best_mIoU": 0.5}))
    corrupt = tmp / "corrupt" / "runs" / "a" / "seed1"
    corrupt.mkdir(parents=True)
    (corrupt / "result.json").write_text("{ not json")
    # [15/18]: another run's home, an earlier copy of its checkpoint, a copy whose run is gone, 300 classes
    home = {"run_dir": str(tmp / "runs"), "dataset": "synthetic", "checkname": "deeplab-resnet18",
            "experiment": "experiment_0"}
    exp = tmp / "runs" / "synthetic" / "deeplab-resnet18" / "experiment_0"
    exp.mkdir(parents=True)
    torch.save({"state_dict": r18, "args": {**args, "kd": False}, "epoch": 1, "home": home}, exp / "checkpoint.pth.tar")
    (tmp / "runs" / "synthetic" / "victim").mkdir()
    (tmp / "runs" / "synthetic" / "victim" / "model_best.pth.tar").write_bytes(b"another run's best model")
    torch.save({"state_dict": r18, "args": {**args, "kd": False}, "epoch": 0, "home": home}, f / "earlier_copy.pth")
    torch.save({"state_dict": r18, "args": {**args, "kd": False}, "epoch": 0,
                "home": {**home, "run_dir": str(tmp / "gone")}}, f / "orphan.pth")
    many = generate(tmp / "many", n_train=8, n_val=2, size=32, seed=0)
    (Path(many) / "classes.txt").write_text("\n".join(f"class {i}" for i in range(300)) + "\n")
    (tmp / "real" / "VOC2012" / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp / "real" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    env = dict(os.environ, ATTNFD_SYNTHETIC_ROOT=root, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return tmp, f, root, broken, env


def exp_ckpt(tmp):
    return tmp / "runs" / "synthetic" / "deeplab-resnet18" / "experiment_0" / "checkpoint.pth.tar"


def cases(tmp, f, root, broken):
    """(name, script, args, expected part of the one line, extra environment)."""
    run = ["--run-dir", str(tmp / "run")]
    kd = [*DATA, "--backbone", "resnet18", *run]
    ckpt = str(f / "baseline.pth")
    sweep = ["--out", str(tmp / "sweep"), "--seeds", "1", "--run", "a"]
    return [
        # data loss
        ("predict into its input folder", "predict.py", ["--checkpoint", ckpt, "--input", str(f / "photos"),
                                                         "--output", str(f / "photos")], "is --input", {}),
        ("attention maps into the input folder", "attention_maps.py", ["--student", ckpt, "--teacher", ckpt,
         "--input", str(f / "photos"), "--output", str(f / "photos")], "is --input", {}),
        ("export over its checkpoint", "export.py", ["--checkpoint", ckpt, "--format", "pt2", "--output", ckpt],
         "is also --checkpoint", {}),
        ("eval --json over the checkpoint", "eval.py", ["--checkpoint", ckpt, "--dataset", "synthetic",
                                                        "--json", ckpt, "--no-cuda"], "is also --checkpoint", {}),
        ("eval --save-vis into the dataset", "eval.py", ["--checkpoint", ckpt, "--dataset", "synthetic", "--no-cuda",
                                                         "--save-vis", str(Path(root) / "JPEGImages")],
         "lies inside --dataset synthetic's root", {}),
        ("sweep over a finished cell of another command", "sweep.py", [*sweep, "train.py --lr 0.2"],
         "finished or started with another command", {}),
        # silently wrong
        ("train.py resumes a distillation", "train.py", [*kd, "--resume", str(f / "kd.pth")],
         "was written by train_kd.py", {}),
        ("train_kd.py resumes a baseline", "train_kd.py", [*kd, "--resume", ckpt, "--teacher_path", ckpt],
         "was written by train.py", {}),
        ("another method set", "train_kd.py", [*kd, "--resume", str(f / "kd.pth"), "--teacher_path", ckpt,
                                               "--attn_lambda", "0", "--kd_lambda", "1"],
         "distils with attnfd, this run with kd", {}),
        ("another batch mid-epoch", "train.py", [*kd, "--resume", str(f / "mid_epoch.pth")],
         "resume it with --batch-size 2", {}),
        # tracebacks before
        ("a list in a state_dict (teacher)", "train_kd.py", [*kd, "--teacher_path", str(f / "list_in_state_dict.pth")],
         "not a usable checkpoint", {}),
        ("args that are not a dict (resume)", "train.py", [*kd, "--resume", str(f / "args_not_a_dict.pth")],
         "its args is a list", {}),
        ("history that is not a list (eval)", "eval.py", ["--checkpoint", str(f / "history_not_a_list.pth"),
                                                          "--dataset", "synthetic", "--no-cuda"],
         "its history is a dict", {}),
        ("malformed checkpoint (export)", "export.py", ["--checkpoint", str(f / "list_in_state_dict.pth"),
                                                        "--format", "pt2", "--output", str(tmp / "x.pt2")],
         "not a usable checkpoint", {}),
        ("--crop-size 1", "train.py", [*kd, "--crop-size", "1"], "too small for --out-stride", {}),
        ("--use-sbd off Pascal", "train.py", [*kd, "--use-sbd"], "only --dataset pascal has SBD", {}),
        ("eval --json a folder", "eval.py", ["--checkpoint", ckpt, "--dataset", "synthetic", "--json", str(f),
                                             "--no-cuda"], "is a folder", {}),
        ("attention maps of no images", "attention_maps.py", ["--student", ckpt, "--teacher", ckpt, "--input",
                                                               str(tmp / "nowhere"), "--output", str(tmp / "out")],
         "no images found", {}),
        ("predict into a file", "predict.py", ["--checkpoint", ckpt, "--input", str(f / "photos"), "--output", ckpt],
         "is a file", {}),
        ("export --output a folder", "export.py", ["--checkpoint", ckpt, "--format", "pt2", "--output", str(f)],
         "is a folder", {}),
        ("sweep: an unclosed quote", "sweep.py", [*sweep, "train.py --lr '0.1"], "No closing quotation", {}),
        ("sweep: a corrupt result.json", "sweep.py", ["--out", str(tmp / "corrupt"), "--seeds", "1", "--run", "a",
                                                      "train.py", "--report-only"], "unreadable or not a sweep", {}),
        ("sweep --out a file", "sweep.py", ["--out", ckpt, "--seeds", "1", "--run", "a", "train.py"], "is a file", {}),
        # the cases of [8/9]
        ("no dataset root", "train.py", kd, "synthetic root not found", {"ATTNFD_SYNTHETIC_ROOT": str(tmp / "none")}),
        ("no such teacher", "train_kd.py", [*kd, "--teacher_path", str(tmp / "missing.pth")],
         "--teacher_path: no checkpoint at", {}),
        ("the default teacher, not downloaded", "train_kd.py", kd, "drive.google.com", {}),
        ("a garbage --resume", "train.py", [*kd, "--resume", str(f / "garbage.pth")], "cannot read checkpoint", {}),
        ("a truncated teacher", "train_kd.py", [*kd, "--teacher_path", str(f / "truncated.pth")],
         "cannot read checkpoint", {}),
        ("a teacher of 5 classes", "train_kd.py", [*kd, "--teacher_path", str(f / "five_classes.pth")], "7 classes",
         {}),
        ("a teacher recording no backbone", "train_kd.py", [*kd, "--teacher_path", str(f / "r18_no_args.pth")],
         "DeepLab(resnet101", {}),
        ("--resume of another backbone", "train.py", [*kd, "--resume", str(f / "mobilenet.pth")],
         "does not match DeepLab(resnet18", {}),
        ("--resume of another dataset", "train.py", [*kd, "--resume", str(f / "pascal.pth")],
         "was trained on pascal, not --dataset synthetic", {}),
        ("an unwritable --run-dir", "train.py", [*kd, "--run-dir", str(f / "a-file" / "run")],
         "is a file, not a folder", {}),
        ("an absent GPU", "train.py", [a for a in kd if a != "--no-cuda"] + ["--gpu-ids", "7"],
         "--gpu-ids 7: this machine has", {}),
        ("a batch the split cannot fill", "train.py", [*kd, "--batch-size", "16"], "the train split has only 8", {}),
        ("eval contradicting the checkpoint", "eval.py", ["--checkpoint", ckpt, "--dataset", "synthetic",
                                                          "--backbone", "mobilenet", "--no-cuda"],
         "records backbone resnet18; --backbone mobilenet contradicts it", {}),
        ("ImageNet weights offline", "train.py", [a for a in kd if a != "--no-pretrained"], "resnet18-f37072fd.pth",
         {"TORCH_HOME": str(tmp / "torch_home")}),
        # found only by reading the code, or beyond the issue
        ("--resume a folder", "train.py", [*kd, "--resume", str(f)], "no checkpoint at", {}),
        ("--resume of a finished run", "train.py", [*kd, "--resume", ckpt], "nothing is left to train", {}),
        ("--checkname out of --run-dir", "train.py", [*kd, "--checkname", "../../escape"], "plain folder name", {}),
        ("--start_epoch past --epochs", "train.py", [*kd, "--start_epoch", "1"], "nothing to train", {}),
        ("a broken image found in epoch 0", "train.py", [*kd], "unreadable image", {"ATTNFD_SYNTHETIC_ROOT": broken}),
        # [15/18]: the data loss, silently wrong and traceback classes of the round-3 probe
        ("a resume into another run's folder", "train.py", [*DATA, "--backbone", "resnet18", "--epochs", "3",
                                                             "--checkname", "victim", "--resume", str(exp_ckpt(tmp))],
         "--checkname victim: --resume", {}),
        ("a resume under another --run-dir", "train.py", [*kd, "--epochs", "3", "--resume", str(exp_ckpt(tmp))],
         "a resumed run writes only there", {}),
        ("a resume of an earlier copy", "train.py", [*DATA, "--backbone", "resnet18", "--epochs", "3", "--resume",
                                                     str(f / "earlier_copy.pth")], "is an earlier state", {}),
        ("a resume of a copy whose run is gone", "train.py", [*DATA, "--backbone", "resnet18", "--resume",
                                                              str(f / "orphan.pth")], "which is not there", {}),
        ("probe_taps over the dataset's class list", "probe_taps.py", ["--checkpoint", ckpt, "--output",
                                                                        str(Path(root) / "classes.txt")],
         "lies inside --dataset synthetic's root", {}),
        ("300 classes in classes.txt", "train.py", kd, "lists 300 classes; give 2 to 255",
         {"ATTNFD_SYNTHETIC_ROOT": str(tmp / "many" / "VOC2012")}),
        ("--cirkd_pool 1.9", "train_kd.py", [*kd, "--teacher_path", ckpt, "--cirkd_lambda", "1", "--cirkd_pool", "1.9"],
         "is not an integer", {}),
        ("--cirkd_pool 1000", "train_kd.py", [*kd, "--teacher_path", ckpt, "--cirkd_lambda", "1", "--cirkd_pool",
                                              "1000"], "the mini-batch term is always 0", {}),
        ("--cirkd_pixel_memory 1", "train_kd.py", [*kd, "--teacher_path", ckpt, "--cirkd_lambda", "1",
                                                   "--cirkd_pixel_memory", "1"], "give at least 64", {}),
        ("--cirkd_pixel_memory 1e12", "train_kd.py", [*kd, "--teacher_path", ckpt, "--cirkd_lambda", "1",
                                                      "--cirkd_pixel_memory", "1e12"], "GiB", {}),
        ("a method on whose terms are all 0", "train_kd.py", [*kd, "--teacher_path", ckpt, "--dist_lambda", "1",
                                                              "--dist_beta", "0", "--dist_gamma", "0"],
         "would contribute nothing", {}),
        ("a benchmark of a missing checkpoint", "benchmarks/cost.py", ["--models", str(tmp / "missing.pth"), "--reps",
                                                                       "0", "--device", "cpu"], "no checkpoint at", {}),
        ("a benchmark writing into no folder", "benchmarks/step_time.py", ["--device", "cpu", "--json",
                                                                           str(tmp / "nowhere" / "st.json")],
         "does not exist", {}),
        ("a row flag repeated among the common ones", "sweep.py", [*sweep, "train.py --lr 0.1", "--", "--lr", "0.2"],
         "the common args set it too", {}),
        ("the synthetic data over a real dataset", "dataloaders.synthetic", ["--out", str(tmp / "real")],
         "did not write", {}),
        # found by the follow-up probe of [15/18] (the closing note's table)
        ("a batch of one", "train.py", [*kd, "--batch-size", "1"], "needs at least 2 images", {}),
        ("--skd_pool_scale 5", "train_kd.py", [*kd, "--teacher_path", ckpt, "--skd_lambda", "1", "--skd_pool_scale",
                                               "5"], "the pairwise term is always 0", {}),
        ("export --check-size 1 3 3", "export.py", ["--checkpoint", ckpt, "--format", "pt2", "--output",
                                                    str(tmp / "x.pt2"), "--check-size", "1", "3", "3"],
         "must be at least 32", {}),
        ("sweep --launcher not a command", "sweep.py", [*sweep, "train.py", "--launcher", "no-such-command"],
         "not a command found on PATH", {}),
        ("sweep --table among the cells", "sweep.py", [*sweep, "train.py", "--report-only", "--table",
                                                       str(tmp / "sweep" / "runs" / "a" / "seed2" / "t")],
         "where the cells and their records are", {}),
        ("throughput: a batch larger than its images", "benchmarks/throughput.py", [
            "--no-cuda", "--images", "1", "--batch-size", "6", "--work", str(tmp / "g")], "more than the 1 --images",
         {}),
        ("the demo's crop too small (before its data)", "demo.py", ["--out", str(tmp / "g"), "--size", "8",
                                                                     "--no-cuda"], "--crop-size 8 is too small", {}),
    ]


# One case of each class runs as its own process (the script as a user starts it); the others run the same
# scripts' main() in this process (what the process would run after its imports), to keep the suite's time.
AS_PROCESS = {"predict into its input folder", "sweep over a finished cell of another command",
              "train.py resumes a distillation", "a list in a state_dict (teacher)", "eval --json a folder",
              "sweep: an unclosed quote", "--crop-size 1", "--resume of a finished run",
              "a broken image found in epoch 0", "the default teacher, not downloaded", "ImageNet weights offline",
              "export --output a folder"}


def run_process(case, env, cwd):
    name, script, args, message, extra = case
    head = script.split() if script.startswith("-m") else [str(ROOT / script)]
    p = subprocess.run([sys.executable, *head, *args], cwd=cwd, env={**env, **extra}, capture_output=True, text=True,
                       timeout=600)
    return name, message, p.returncode, p.stderr


def main_of(script):
    """The function a script's ``__main__`` block calls with its parsed argv."""
    import importlib

    from utils.cli import one_line_errors

    if script in ("train.py", "train_kd.py"):
        from training import get_args_parser, main
        kd = script == "train_kd.py"
        return lambda argv: main(get_args_parser(kd).parse_args(argv), kd=kd)
    if script == "demo.py":
        import demo

        def run_demo(argv):
            with one_line_errors():
                demo.main_demo(demo.get_demo_parser().parse_args(argv))
        return run_demo
    if script == "sweep.py":
        import sweep

        def run(argv):
            with one_line_errors():
                sweep.main(sweep.parse(argv))
        return run
    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    return lambda argv: module.main(module.get_args_parser().parse_args(argv))


def run_in_process(case, env, cwd, monkeypatch, capsys):
    name, script, args, message, extra = case
    with monkeypatch.context() as m:
        m.chdir(cwd)
        for k, v in {**env, **extra}.items():
            m.setenv(k, v)
        capsys.readouterr()
        try:
            main_of(script)(args)
            code = 0
        except SystemExit as e:
            code = e.code
        return name, message, code, capsys.readouterr().err


def test_every_bad_input_is_one_line_exit_2_and_changes_nothing(work, monkeypatch, capsys):
    tmp, f, root, broken, env = work
    before = checksums(tmp)
    table = cases(tmp, f, root, broken)
    assert AS_PROCESS <= {c[0] for c in table}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: run_process(c, env, tmp), [c for c in table if c[0] in AS_PROCESS]))
    results += [run_in_process(c, env, tmp, monkeypatch, capsys) for c in table if c[0] not in AS_PROCESS]
    failures = []
    for name, message, code, stderr in results:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]  # beside tqdm's bars
        ok = code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in stderr
        if not ok:
            failures.append(f"{name}: exit {code}, stderr {stderr.strip()[-400:]!r}")
    assert not failures, "\n".join(failures)
    assert checksums(tmp) == before  # nothing changed, nothing deleted, no half-made run folder left
    assert not (tmp / "run").exists() and not (tmp / "out").exists() and not (tmp / "g").exists()
    assert len(results) == len(table) >= 63  # the table above, not an accidentally empty one


PARSERS = {
    "train.py": lambda: __import__("training").get_args_parser(),
    "train_kd.py": lambda: __import__("training").get_args_parser(kd=True),
    "eval.py": lambda: __import__("eval").get_args_parser(),
    "predict.py": lambda: __import__("predict").get_args_parser(),
    "export.py": lambda: __import__("export").get_args_parser(),
    "sweep.py": lambda: __import__("sweep").get_args_parser(),
    "demo.py": lambda: __import__("demo").get_demo_parser(),
    "synthetic": lambda: __import__("dataloaders.synthetic", fromlist=["x"]).get_args_parser(),
    "step_time": lambda: __import__("benchmarks.step_time", fromlist=["x"]).get_args_parser(),
}
NEED = {"eval.py": ["--checkpoint", "c"], "predict.py": ["--checkpoint", "c", "--input", "i", "--output", "o"],
        "export.py": ["--checkpoint", "c", "--format", "pt2", "--output", "o"],
        "sweep.py": ["--out", "o", "--seeds", "1", "--run", "a", "train.py"]}


@pytest.mark.parametrize("script, argv, message", [
    ("train_kd.py", ["--attn_lambda", "-1"], "argument --attn_lambda"),
    ("train_kd.py", ["--kd_T", "0"], "must be above 0"),
    ("train_kd.py", ["--dist-T", "-2"], "argument --dist_T"),
    ("train.py", ["--lr", "-1"], "argument --lr"),
    ("train.py", ["--lr", "nan"], "not a finite number"),
    ("train.py", ["--lr", "inf"], "not a finite number"),
    ("train.py", ["--lr", "1e300"], "must be at most 10"),
    ("train.py", ["--base-size", "1"], "must be at least 2"),
    ("train.py", ["--run-dir", ""], "an empty path"),
    ("predict.py", ["--output", ""], "an empty path"),
    ("sweep.py", ["--out", ""], "an empty path"),
    ("train.py", ["--workers", "-1"], "argument --workers"),
    ("train.py", ["--base-size", "0"], "argument --base-size"),
    ("train.py", ["--epochs", "0"], "argument --epochs"),
    ("train.py", ["--epochs", "1.5"], "is not an integer"),
    ("train.py", ["--batch-size", "0"], "argument --batch-size"),
    ("train.py", ["--save-every", "-1"], "argument --save-every"),
    ("train.py", ["--momentum", "2"], "at most 1"),
    ("train.py", ["--weight-decay", "-1"], "argument --weight-decay"),
    ("train.py", ["--seed", "-1"], "argument --seed"),
    ("train.py", ["--dataset", "coco"], "argument --dataset: invalid choice"),
    ("eval.py", ["--crop-size", "0"], "argument --crop-size"),
    ("eval.py", ["--scales", "0"], "argument --scales"),
    ("eval.py", ["--max-vis", "-1"], "argument --max-vis"),
    ("predict.py", ["--batch-size", "0"], "argument --batch-size"),
    ("step_time", ["--batch-size", "1"], "must be at least 2"),
    ("predict.py", ["--alpha", "2"], "at most 1"),
    ("export.py", ["--check-size", "0", "0", "0"], "argument --check-size"),
    ("export.py", ["--opset", "5"], "argument --opset"),
    ("export.py", ["--tolerance", "-1"], "argument --tolerance"),
    ("sweep.py", ["--jobs", "0"], "argument --jobs"),
    ("demo.py", ["--size", "0"], "argument --size"),
    ("demo.py", ["--lr", "0"], "must be above 0"),
    ("synthetic", ["--n-val", "0"], "argument --n-val"),
])
def test_every_numeric_flag_is_range_checked_by_argparse(script, argv, message, capsys):
    """The CLIs' own parsers (what each script runs first): one line, exit 2, before anything is read or written."""
    with pytest.raises(SystemExit) as exit_:
        PARSERS[script]().parse_args(NEED.get(script, []) + argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err and err.startswith("error:"), err
