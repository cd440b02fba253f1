"""torch.distributed on CPU with real gloo processes: N ranks x B/N samples == one process x B samples."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dataloaders.samplers import ShardSampler
from distillation import AttnFD, Distiller
from modeling import DeepLab
from training import SGD, train_step
from utils.device import Precision
from utils.distributed import convert_sync_batchnorm
from utils.loss import SegmentationLosses
from utils.metrics import Evaluator

WORLD, BATCH, SIZE, CLASSES, LR = 2, 4, 64, 3, 0.01

pytestmark = pytest.mark.numerics  # MKL / oneDNN reductions: rerun by .ci/run as another CPU


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE), generator=g)
    y[0, :4] = 255  # ignored pixels on one rank only: the CE mean must still be over the global batch
    return x, y


def build():
    """The same student, teacher and connectors in every process (dropout off: masks differ per process).
    float64: in fp32, summing a batch as 2 + 2 instead of 4 changes the last bits, and the backward through
    some 50 BatchNorms of an untrained net turns that into ~1e-3 relative differences of some gradients; in
    float64 the same difference stays ~1e-12, so the test sees the reduction's maths, not rounding."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    student = DeepLab(num_classes=CLASSES, backbone="mobilenet")
    teacher = DeepLab(num_classes=CLASSES, backbone="resnet18")
    kd = Distiller(student, teacher, [AttnFD(student, teacher)], teacher_train_mode=True)
    for m in kd.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return kd


def one_step(net, kd):
    x, y = batch()
    r, w = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    part = slice(r * BATCH // w, (r + 1) * BATCH // w)
    groups = kd.student.param_groups(LR) + kd.param_groups(LR, "late")
    opt = SGD(groups, lr=LR, momentum=0.9, weight_decay=5e-4)
    kd.train()
    logged = train_step(net, SegmentationLosses().build_loss("ce"), opt, Precision(torch.device("cpu")),
                        x[part], y[part])
    state = {f"student.{k}": v for k, v in kd.student.state_dict().items()}
    state.update({f"connectors.{k}": v for k, v in kd.trainable_modules().state_dict().items()})
    torch.set_default_dtype(torch.float32)
    return {k: float(v) for k, v in logged.items()}, state


def worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    kd = convert_sync_batchnorm(build(), cuda=False)
    ddp = torch.nn.parallel.DistributedDataParallel(kd, static_graph=True)
    logged, state = one_step(ddp, kd)
    # sharded validation: 5 samples over 2 ranks, no padding, confusion matrices summed
    g = torch.Generator().manual_seed(5)
    samples = [(torch.randint(0, CLASSES, (6, 6), generator=g), torch.randint(0, CLASSES, (6, 6), generator=g))
               for _ in range(5)]
    ev = Evaluator(CLASSES)
    for i in ShardSampler(samples, rank, WORLD):
        ev.add_batch(*samples[i])
    ev.all_reduce()
    torch.save({"logged": logged, "state": state, "cm": ev.confusion_matrix, "samples": samples},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_ddp_step_with_sync_bn_equals_one_process_with_the_global_batch(two_ranks):
    torch.set_num_threads(1)
    kd = build()
    logged, state = one_step(kd, kd)
    for r in two_ranks:
        assert set(r["logged"]) == set(logged)
        for k, v in logged.items():  # CE, every AttnFD tap and the total: global-batch values on each rank
            assert r["logged"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        for k, v in state.items():  # updated student, connectors and BN statistics
            torch.testing.assert_close(r["state"][k], v, rtol=1e-7, atol=1e-9, msg=k)
    initial = build().student.state_dict()
    torch.set_default_dtype(torch.float32)
    moved = max(float((state[f"student.{k}"] - v).abs().max()) for k, v in initial.items() if v.is_floating_point())
    assert moved > 1e-4  # the step did change the weights, so equal weights mean equal updates


def test_sharded_validation_gives_the_single_process_confusion_matrix(two_ranks):
    ev = Evaluator(CLASSES)
    for gt, pred in two_ranks[0]["samples"]:
        ev.add_batch(gt, pred)
    for r in two_ranks:
        assert torch.equal(r["cm"], ev.confusion_matrix)
    assert list(ShardSampler(range(5), 0, 2)) == [0, 2, 4] and list(ShardSampler(range(5), 1, 2)) == [1, 3]
