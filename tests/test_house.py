"""The structure the README's "Extend" section promises: a dataset or a method is one declaration, every backbone
keeps the protocol, and the trainer's own optimizer wiring holds under 2 real gloo processes."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import save_random_checkpoint

from dataloaders import build_loaders, class_names
from dataloaders.datasets import DATASETS, register_dataset
from dataloaders.datasets.pascal import voc_dataset
from dataloaders.synthetic import generate
from dataloaders.utils import get_palette
from distillation import METHODS, LogitsMethod, build_distiller, register_method, settings_from_args
from distillation.base import Hyper
from modeling import DeepLab
from modeling.backbone import BACKBONES, build_backbone
from training import get_args_parser, resolve_args

SIZE = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("house") / "data", n_train=8, n_val=2, size=SIZE, seed=0)


@pytest.fixture
def toy_dataset(root, monkeypatch):
    """The README's worked example: a dataset declared in one place (a reader in the VOC layout, 255-filled
    masks, its own colours, epochs and lr)."""
    @register_dataset("toy", classes=("bg", "a", "b", "c", "d", "e", "f"), colors=((1, 2, 3),) * 7, mask_fill=255,
                      epochs=7, lr=0.03)
    def toy_dataset(root, split, transform):
        return voc_dataset(root, split, transform, name="toy")

    monkeypatch.setenv("ATTNFD_TOY_ROOT", root)
    yield "toy"
    del DATASETS["toy"]


def test_a_dataset_declared_once_is_known_everywhere(toy_dataset):
    args = resolve_args(get_args_parser().parse_args(["--dataset", "toy", "--batch-size", "3"]))
    assert (args.epochs, args.lr) == (7, pytest.approx(0.03 / 6 * 3))
    assert class_names("toy")[:2] == ("bg", "a") and tuple(get_palette("toy")[6]) == (1, 2, 3)
    assert get_palette("toy")[7:].sum() == 0  # unused entries (void included) black
    train, val, n = build_loaders("toy", 4, SIZE, SIZE, seed=0)
    assert n == 7 and len(train) == 2 and len(val) == 2
    assert train.dataset.transform.geometric.transforms[2].mask_fill == 255
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("toy", classes=(), colors=None, mask_fill=0, epochs=1, lr=1)(lambda *a: None)


@pytest.fixture
def l2_method():
    """A method declared in one class: its flags, constructor, notes and registry entry come from ``hyper``."""
    @register_method
    class L2(LogitsMethod):
        name, title = "l2", "L2"
        hyper = (Hyper("weight", "l2_lambda", 0.0, "L2 weight; 0 = off", paper=1.0, low=0),
                 Hyper("power", "l2_power", 2.0, "exponent", low=0, low_open=True))
        loss = staticmethod(lambda s, t, power: (s - t).abs().pow(power).mean())
    yield L2
    del METHODS["l2"]


def test_a_method_declared_once_gets_flags_settings_and_terms(l2_method):
    args = get_args_parser(kd=True).parse_args(["--attn_lambda", "0", "--l2-lambda", "0.5", "--l2_power", "1"])
    assert settings_from_args(args) == {"l2": {"weight": 0.5, "power": 1.0}}
    torch.manual_seed(0)
    student, teacher = DeepLab(3, "mobilenet"), DeepLab(3, "resnet18")
    d = build_distiller(student, teacher, settings_from_args(args)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        logits, terms = d(x)
        expected = 0.5 * (logits - teacher(x)).abs().mean() / 2  # divided by the batch, as KD's
    assert terms["l2"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert d.notes() == ["L2: l2_lambda 0.5, l2_power 1.0"] and l2_method(student, teacher).weight == 1.0
    with pytest.raises(SystemExit):  # a negative weight is refused by argparse
        get_args_parser(kd=True).parse_args(["--l2_lambda", "-1"])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registered_backbone_keeps_the_protocol(name):
    backbone = build_backbone(name, output_stride=16)
    stages = backbone(torch.randn(1, 3, 64, 64))
    assert [s.shape[1] for s in stages] == list(backbone.stage_channels) and len(stages) == 4
    assert [s.shape[2] for s in stages] == [16, 8, 4, 4]
    assert backbone.low_level_channels == stages[0].shape[1] and backbone.out_channels == stages[3].shape[1]
    assert backbone.cbam.channels == backbone.out_channels and isinstance(backbone.stage_relu, bool)
    assert [bn.num_features for bn in backbone.stage_bns()] == list(backbone.stage_channels)


# ---- the trainer itself under 2 gloo processes -------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_worker(rank, port, argv, out):
    """One torchrun-like process running what train_kd.py's main runs; it saves its weights before and after."""
    from training.main import fit, setup
    from utils import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init(cuda=False)
    run = setup(resolve_args(get_args_parser(kd=True).parse_args(argv), kd=True, world=2))

    def params():
        named = {f"student.{k}": v for k, v in run.model.named_parameters()}
        named.update({f"connectors.{k}": v for k, v in run.distiller.trainable_modules().named_parameters()})
        return {k: v.detach().clone() for k, v in named.items()}

    before = params()
    fit(run)
    torch.save({"before": before, "params": params(), "groups": [g.get("name", "student")
                                                                  for g in run.optimizer.param_groups]},
               f"{out}/rank{rank}.pt")
    distributed.cleanup()


def two_ranks(tmp, argv):
    mp.spawn(rank_worker, args=(free_port(), argv, str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_trainer_wires_optimizers_and_syncs_the_warmup_under_two_gloo_processes(root, tmp_path, monkeypatch):
    """Warm-up epoch (connectors alone, gradients averaged by hand), then a DDP epoch (student + Overhaul's
    connectors in the main optimizer, AttnFD's fixed): the ranks see different images, yet every weight is the
    same on both, as it is only when every gradient was averaged."""
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", root)
    teacher = save_random_checkpoint(tmp_path / "teacher.pth.tar", "resnet18")
    run_dir = tmp_path / "run"
    argv = ["--dataset", "synthetic", "--backbone", "mobilenet", "--base-size", str(SIZE), "--crop-size", str(SIZE),
            "--batch-size", "4", "--lr", "0.05", "--workers", "0", "--no-pretrained", "--no-cuda", "--no-val",
            "--teacher_path", str(teacher), "--overhaul_lambda", "1e-5", "--run-dir", str(run_dir), "--epochs"]
    (tmp_path / "warm").mkdir()
    warm = two_ranks(tmp_path / "warm", argv + ["1"])
    for k, v in warm[0]["params"].items():
        assert torch.equal(warm[1]["params"][k], v), k
        assert torch.equal(v, warm[0]["before"][k]) == k.startswith("student."), f"{k}: wrong part learned"
    ckpt = next(run_dir.rglob("checkpoint.pth.tar"))
    (tmp_path / "late").mkdir()
    late = two_ranks(tmp_path / "late", argv + ["2", "--resume", str(ckpt)])
    assert late[0]["groups"] == ["student", "student", "overhaul"]  # AttnFD's connectors stay out
    for k, v in late[0]["params"].items():
        assert torch.equal(late[1]["params"][k], v), k
        assert torch.equal(late[0]["before"][k], warm[0]["params"][k]), f"{k} not resumed"
    moved = {k for k, v in late[0]["params"].items() if not torch.equal(v, warm[0]["params"][k])}
    assert any(k.startswith("student.") for k in moved) and any(k.startswith("connectors.overhaul") for k in moved)
    assert not any(k.startswith("connectors.attnfd") for k in moved)
    assert np.isfinite([float(v.abs().sum()) for v in late[0]["params"].values()]).all()
