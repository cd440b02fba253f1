"""The comparison methods (KD, AT, Overhaul, CWD, DIST, SKD, CIRKD, LAD, Af-DCD) and AttnFD behind one interface:
known values on hand-built tensors, zero when the student reproduces the teacher, gradients only to the student and
the connectors, channel/size mismatches, bf16 autocast, and global-batch reductions under torch.distributed."""
import copy
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from distillation import (
    METHODS,
    at_loss,
    attnfd_loss,
    build_distiller,
    contrastive_loss,
    cwd_loss,
    dist_loss,
    kd_loss,
    margin_from_bn,
    mimic_loss,
    minibatch_loss,
    overhaul_loss,
    overhaul_partial_l2,
    settings_from_args,
    skd_pairwise_loss,
    skd_pixelwise_loss,
)
from modeling import DeepLab
from training import get_args_parser
from utils.device import HostSyncs

PAPER = {"attn_lambda": "2", "kd_lambda": "1", "at_lambda": "1000", "overhaul_lambda": "1e-5", "cwd_lambda": "3",
         "dist_lambda": "1", "skd_lambda": "1", "cirkd_lambda": "1", "lad_lambda": "3", "afdcd_lambda": "1"}
SMALL = ["--cirkd_pixel_memory", "40", "--cirkd_region_memory", "8"]  # CIRKD's queues, short for tests
TERMS = {"attnfd": {f"attnfd/{t}" for t in ("backbone", "aspp", "decoder")},
         "cirkd": {f"cirkd/{t}" for t in ("kd", "minibatch", "memory_pixel", "memory_region")},
         "afdcd": {f"afdcd/{t}" for t in ("kd", "mimic", "contrast")},
         "skd": {"skd/pixelwise", "skd/pairwise"}}


def labels_for(x, num_classes=3):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, num_classes, (x.shape[0], *x.shape[2:]), generator=g)
    y[:, :4] = 255  # an ignored band
    return y


def teacher_for(name, backbone="resnet18"):
    """A random teacher; LAD's is label-assisted (a 4th input channel)."""
    return DeepLab(num_classes=3, backbone=backbone, label_channel=name == "lad")


def flags(*names, extra=()):
    """The method settings of train_kd.py flags with exactly ``names`` (method names) on at their papers' weights."""
    argv = []
    for m in METHODS.values():
        argv += [f"--{m.hyper[0].flag}", PAPER[m.hyper[0].flag] if m.name in names else "0"]
    return settings_from_args(get_args_parser(kd=True).parse_args(argv + SMALL + list(extra)))


# ---- known values on hand-built tensors -------------------------------------------------------------

def test_kd_by_hand():
    s = torch.zeros(1, 2, 1, 2)                      # two pixels, uniform student
    t = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # pixel 0: p_t = (.75, .25); pixel 1: uniform
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t).item() == pytest.approx(kl0 / 2, rel=1e-5)   # mean over the two pixels
    # T = 2: p_t(pixel 0) = softmax(log(3)/2, 0) = (sqrt3, 1)/(sqrt3 + 1); x T^2
    a = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5)
    assert kd_loss(s, t, temperature=2).item() == pytest.approx(4 * kl / 2, rel=1e-5)


def test_cwd_by_hand():
    # one channel, two pixels: teacher's spatial distribution (.25, .75), student's uniform
    s, t = torch.zeros(1, 1, 1, 2), torch.tensor([0.0, math.log(3)]).view(1, 1, 1, 2)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert cwd_loss(s, t, temperature=1).item() == pytest.approx(kl, rel=1e-5)
    # two samples x two channels, only one (sample, channel) differs: divided by N x C = 4; x T^2
    s4, t4 = torch.zeros(2, 2, 1, 2), torch.zeros(2, 2, 1, 2)
    t4[1, 0] = t[0, 0] * 4  # at T = 4 the same distribution
    assert cwd_loss(s4, t4, temperature=4).item() == pytest.approx(16 * kl / 4, rel=1e-5)


def _pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / (math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b)) + 1e-8)


def test_dist_by_hand():
    p_s = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]  # two pixels' class probabilities
    p_t = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    s = torch.tensor(p_s).log().t().reshape(1, 3, 1, 2)  # logits whose softmax is p
    t = torch.tensor(p_t).log().t().reshape(1, 3, 1, 2)
    inter = 1 - sum(_pearson(a, b) for a, b in zip(p_s, p_t)) / 2
    intra = 1 - sum(_pearson([r[c] for r in p_s], [r[c] for r in p_t]) for c in range(3)) / 3
    assert dist_loss(s, t).item() == pytest.approx(inter + intra, rel=1e-4)
    assert dist_loss(s, t, beta=2, gamma=0.5).item() == pytest.approx(2 * inter + 0.5 * intra, rel=1e-4)


def test_at_by_hand_also_across_channel_counts_and_sizes():
    s = torch.tensor([[3.0, 0.0], [4.0, 0.0]]).view(1, 2, 1, 2)         # map: (12.5, 0) -> (1, 0)
    t = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]).view(1, 3, 1, 2)  # map: (1, 1) -> (.707, .707)
    r = 1 / math.sqrt(2)
    assert at_loss(s, t).item() == pytest.approx(((1 - r) ** 2 + r ** 2) / 2, rel=1e-5)
    assert at_loss(t[:, :2], t).item() == 0
    # a student map of another size is resized to the teacher's
    assert at_loss(torch.ones(1, 2, 2, 2), torch.ones(1, 3, 4, 4)).item() == pytest.approx(0, abs=1e-12)


def test_at_term_is_the_papers_beta_over_2_or_with_code_the_authors_scripts_beta():
    """The paper: beta/2 x the sum over stages; its authors' training scripts: beta x the sum (--at-formula code)."""
    from distillation import AT

    torch.manual_seed(0)
    student, teacher = DeepLab(num_classes=3, backbone="mobilenet"), DeepLab(num_classes=3, backbone="resnet18")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        s, t = student.forward_features(x), teacher.forward_features(x)
        terms = {f: AT(student, teacher, weight=1000.0, formula=f)(s, t)["at"] for f in ("paper", "code")}
        by_hand = sum(at_loss(F.relu(a) if student.backbone.stage_relu else a,
                              F.relu(b) if teacher.backbone.stage_relu else b) for a, b in zip(s.stages, t.stages))
    assert terms["paper"].item() == pytest.approx(500 * by_hand.item(), rel=1e-6)
    assert terms["code"].item() == pytest.approx(2 * terms["paper"].item(), rel=1e-6)


def test_overhaul_margin_and_partial_l2_by_hand():
    bn = torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.0, 20.0]))  # channel 1: P(x < 0) ~ 0 -> -3 std
    m = margin_from_bn(bn).flatten()
    assert m[0].item() == pytest.approx(-2 / math.sqrt(2 * math.pi), rel=1e-6) and m[1].item() == pytest.approx(-6)
    source = torch.tensor([1.0, -2.0, -0.5]).view(1, 1, 1, 3)
    target = torch.tensor([0.5, -1.0, -3.0]).view(1, 1, 1, 3)
    # clipped target (.5, -1, -1); position 1: source below a negative target -> skipped
    assert overhaul_partial_l2(source, target, torch.tensor(-1.0)).item() == pytest.approx(0.25 + 0.25)
    # over features: / divider each, / batch size
    loss = overhaul_loss([source.repeat(2, 1, 1, 1)] * 2, [target.repeat(2, 1, 1, 1)] * 2, [torch.tensor(-1.0)] * 2,
                         dividers=[8, 1])
    assert loss.item() == pytest.approx((1.0 / 8 + 1.0) / 2)


def test_skd_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # nodes (1,0), (0,1): similarity I
    t = torch.tensor([[1.0, 2.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # nodes (1,0), (2,0): all ones
    assert skd_pairwise_loss(s, t, pool_scale=0.5).item() == pytest.approx(2 / 4, rel=1e-5)
    assert skd_pairwise_loss(torch.ones(1, 5, 1, 2), t, 0.5).item() == pytest.approx(0, abs=1e-6)  # 5 vs 2 channels
    # pixel-wise: sum over pixels of H(p_t, p_s), / (H x W), not / batch: 2 images of 1 x 2 pixels, 2 classes
    s_logits = torch.zeros(2, 2, 1, 2)  # p_s = (1/2, 1/2) everywhere: H = log 2 whatever p_t
    assert skd_pixelwise_loss(s_logits, torch.randn(2, 2, 1, 2)).item() == pytest.approx(4 * math.log(2) / 2)


# ---- every method on real DeepLabs ----------------------------------------------------------------------

def _identity_connectors(distiller):
    """Connectors that pass features through unchanged (1x1 identity conv, eval BN with eps 0)."""
    for m in distiller.trainable_modules().modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.eye_(m.weight.view(m.weight.shape[0], -1))
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 0.0


def _student_copy(teacher):
    """A plain student computing what ``teacher`` computes (a label-assisted teacher's label weights zeroed)."""
    if not teacher.label_channel:
        return copy.deepcopy(teacher)
    student = DeepLab(num_classes=teacher.num_classes, backbone=teacher.backbone_name)
    state = teacher.state_dict()
    conv = next(k for k, v in state.items() if v.dim() == 4)
    with torch.no_grad():
        state[conv][:, 3:] = 0
    teacher.load_state_dict(state)
    student.load_state_dict({**state, conv: state[conv][:, :3]})
    return student


@pytest.mark.numerics
@pytest.mark.parametrize("name", [n for n in METHODS if n != "afdcd"])  # Af-DCD: below (no zero point)
def test_loss_is_zero_when_the_student_reproduces_the_teacher(name):
    torch.manual_seed(0)
    teacher = teacher_for(name)
    student = _student_copy(teacher)
    d = build_distiller(student, teacher, flags(name, extra=["--teacher-attention", "checkpoint"])).eval()
    _identity_connectors(d)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _, terms = d(x, labels=labels_for(x))
        if name == "skd":  # SKD's pixel-wise term is a cross-entropy: at its minimum it is the teacher's entropy
            p = F.softmax(d.teacher_features(x, logits=True).logits, 1)
            entropy = -(p * p.log()).sum() / (48 * 48) / 2  # / (H x W), / batch by the Distiller
            assert terms.pop("skd/pixelwise").item() == pytest.approx(10 * entropy.item(), rel=1e-5)
    assert terms and all(abs(v.item()) < 1e-5 for v in terms.values()), terms  # 1 - pearson(x, x): a few ulp
    # and not zero for a student with other weights
    d = build_distiller(DeepLab(num_classes=3, backbone="resnet18"), teacher, flags(name)).eval()
    with torch.no_grad():
        _, terms = d(x, labels=labels_for(x))
    assert sum(terms.values()).item() > 1e-6


@pytest.mark.parametrize("name", list(METHODS))
def test_gradients_reach_only_the_student_and_the_connectors(name):
    """MobileNetV2 student (24..320 channels) vs ResNet-18 teacher (64..512): channel mismatches throughout."""
    torch.manual_seed(0)
    teacher, student = teacher_for(name), DeepLab(num_classes=3, backbone="mobilenet")
    d = build_distiller(student, teacher, flags(name)).train()
    x = torch.randn(2, 3, 64, 64)
    _, terms = d(x, labels=labels_for(x))
    assert set(terms) == TERMS.get(name, {name})
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    own = list(d.methods[name].parameters())
    assert all(p.grad is not None for p in own) and bool(own) == (name in ("attnfd", "overhaul", "cirkd", "afdcd"))
    named = {id(p) for p in student.parameters()} | {id(p) for p in own}
    assert all(id(p) in named for p in d.parameters() if p.grad is not None)


def test_warmup_runs_only_the_methods_that_warm_up_and_freezes_the_student():
    torch.manual_seed(0)
    teacher, student = teacher_for("lad"), DeepLab(num_classes=3, backbone="mobilenet")
    d = build_distiller(student, teacher, flags(*METHODS)).train()
    x = torch.randn(2, 3, 64, 64)
    logits, terms = d(x, labels=labels_for(x), warmup=True)
    assert {k.split("/")[0] for k in terms} == {"attnfd", "overhaul"} and not logits.requires_grad
    sum(terms.values()).backward()
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for n, m in d.trainable_modules().items() if m.warmup for p in m.parameters())
    groups = {ph: [(g["name"], g["lr"]) for g in d.param_groups(0.1, ph)] for ph in ("warmup", "student", "late")}
    assert groups == {"warmup": [("attnfd", 0.1), ("overhaul", 1.0)],
                      "student": [("overhaul", 1.0), ("cirkd", 0.1), ("afdcd", 0.1)], "late": [("attnfd", 0.1)]}


def test_terms_keep_their_papers_ratio_to_this_codebases_batch_averaged_ce():
    """CE here is divided by the batch size (reference); KD & co. come from mean-CE codebases, so the
    Distiller divides their terms by the batch size too; AttnFD and Overhaul were set against this CE."""
    torch.manual_seed(0)
    teacher = DeepLab(num_classes=3, backbone="resnet18")
    d = build_distiller(DeepLab(num_classes=3, backbone="mobilenet"), teacher,
                        flags("attnfd", "kd")).eval()
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        _, terms = d(x)
        s, t = d.student_features(x), d.teacher_features(x, logits=True)
    assert terms["kd"].item() == pytest.approx(kd_loss(s.logits, t.logits).item() / 4, rel=1e-5)
    assert not d.methods["attnfd"].divide_by_batch and not METHODS["overhaul"].divide_by_batch
    assert all(m.divide_by_batch for n, m in METHODS.items() if n not in ("attnfd", "overhaul"))


LOSSES = {
    "attnfd": lambda s, t: attnfd_loss(s, t),
    "kd": lambda s, t: kd_loss(s, t, 2.0),
    "at": at_loss,
    "overhaul": lambda s, t: overhaul_loss([s], [t], [torch.tensor(-0.5)], dividers=[2]),
    "cwd": cwd_loss,
    "dist": dist_loss,
    "skd": skd_pairwise_loss,
    "skd_pixelwise": skd_pixelwise_loss,
    "cirkd_minibatch": minibatch_loss,
    "afdcd_mimic": mimic_loss,
    "afdcd_contrast": lambda s, t: contrastive_loss(s.repeat(1, 4, 1, 1)[:, :16], t.repeat(1, 4, 1, 1)[:, :16], 1),
}


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_are_fp32_finite_and_right_under_bf16_autocast(name):
    torch.manual_seed(0)
    s = (3 * torch.randn(2, 5, 12, 12)).bfloat16()
    t = (3 * torch.randn(2, 5, 12, 12)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = LOSSES[name](s, t)
    exact = LOSSES[name](s.float(), t.float())
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(exact.item(), rel=1e-4)


# ---- global-batch reductions under torch.distributed (gloo, 2 processes) -----------------------------------

def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 5, 6, 6, generator=g, dtype=torch.float64), \
        torch.randn(4, 5, 6, 6, generator=g, dtype=torch.float64)


def _value_and_grad(name, s, t):
    s = s.clone().requires_grad_(True)
    loss = LOSSES[name](s, t)
    loss.backward()
    return loss.item(), s.grad


def _worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    s, t = _inputs()
    part = slice(2 * rank, 2 * rank + 2)
    result = {name: _value_and_grad(name, s[part], t[part]) for name in LOSSES}
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_every_loss_reduces_over_the_global_batch(tmp_path):
    """Two ranks with half the batch each hold the loss one process computes on the whole batch, and the
    gradients of their halves, averaged over the ranks as DDP averages, are that process's gradient."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    s, t = _inputs()
    for name in LOSSES:
        value, grad = _value_and_grad(name, s, t)
        for r, result in enumerate(ranks):
            assert result[name][0] == pytest.approx(value, rel=1e-9), name
            torch.testing.assert_close(result[name][1] / 2, grad[2 * r:2 * r + 2], rtol=1e-7, atol=1e-12, msg=name)


def _all_methods():
    """A distiller with every method on at its paper's weight (LAD's label-assisted teacher)."""
    torch.manual_seed(0)
    return build_distiller(DeepLab(num_classes=3, backbone="resnet18"), teacher_for("lad"), flags(*METHODS)).train()


def test_a_training_step_of_every_method_makes_no_host_sync():
    """The teacher, the student, every method's terms and the backward: nothing in them waits for the device
    (CIRKD's queues and Af-DCD's negatives included), so a GPU step runs ahead of the host."""
    d = _all_methods()
    assert set(d.methods) == set(METHODS)
    x = torch.randn(2, 3, 48, 48)
    labels = labels_for(x)
    for _ in range(2):  # CIRKD: the second step enqueues over written slots
        with HostSyncs() as syncs:
            _, terms = d(x, labels=labels)
            sum(terms.values()).backward()
        assert syncs.seen == [], syncs.seen
    with HostSyncs() as syncs:  # the counter sees one
        bool(x.sum() > 0), x[x > 0]
    assert syncs.seen == ["_local_scalar_dense", "index"]


def test_compiled_methods_give_the_same_terms_and_gradients():
    """``--compile-methods``: each method under torch.compile (here the aot_eager backend: the same capture through
    dynamo and AOTAutograd as inductor's, without its C++ build) gives the eager terms and its modules' gradients;
    CIRKD's queues go on as in eager."""
    d = _all_methods()
    compiled = copy.deepcopy(d).compile_methods(backend="aot_eager")
    x = torch.randn(2, 3, 48, 48)
    labels = labels_for(x)
    results = []
    for net in (d, compiled):
        torch.manual_seed(1)  # the same dropout and Af-DCD masks
        _, terms = net(x, labels=labels)
        sum(terms.values()).backward()
        results.append((terms, {n: p.grad for n, p in net.methods.named_parameters() if p.grad is not None},
                        net.methods["cirkd"].memory.state()))
    (eager, eager_grads, eager_queues), (got, got_grads, got_queues) = results
    assert set(got) == set(eager) and len(eager) > len(METHODS) and set(got_grads) == set(eager_grads)
    for k in eager:
        torch.testing.assert_close(got[k], eager[k], rtol=1e-5, atol=1e-6)
    for k in eager_grads:
        torch.testing.assert_close(got_grads[k], eager_grads[k], rtol=1e-4, atol=1e-6)
    for k in eager_queues:
        torch.testing.assert_close(got_queues[k], eager_queues[k])
