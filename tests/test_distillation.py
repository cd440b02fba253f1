import math

import pytest
import torch
import torch.nn.functional as F

from distillation import AttnFD, Distiller, attnfd_loss, build_connector, build_distiller
from modeling import DeepLab
from utils.loss import SegmentationLosses
from utils.lr_scheduler import LRSchedule
from utils.metrics import Evaluator

S = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
T = torch.tensor([[0.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)


def test_attnfd_loss_global_norm_by_hand():
    # one sample: (1+4+9)/30 + (4/sqrt(30) - 1)^2
    assert attnfd_loss(S, T).item() == pytest.approx(14 / 30 + (4 / math.sqrt(30) - 1) ** 2, rel=1e-6)
    # the norm is over the whole batch tensor, and the sum is divided by the batch size
    s2, t2 = torch.cat([S, S]), torch.cat([T, T])
    expected = 2 * (14 / 60 + (4 / math.sqrt(60) - 1 / math.sqrt(2)) ** 2) / 2
    assert attnfd_loss(s2, t2).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.269703, abs=1e-6)


def test_attnfd_loss_per_channel_norm_by_hand():
    s2, t2 = torch.cat([S, S]), torch.cat([T, T])
    one = 14 / 30 + (4 / math.sqrt(30) - 1) ** 2
    assert attnfd_loss(s2, t2, "channel").item() == pytest.approx(2 * one / 2, rel=1e-6)
    with pytest.raises(ValueError):
        attnfd_loss(S, T, "spatial")


def test_connector_init():
    torch.manual_seed(0)
    c = build_connector(512, 2048)
    assert c[0].bias is None and c[0].weight.shape == (2048, 512, 1, 1)
    assert c[0].weight.std().item() == pytest.approx(math.sqrt(2 / 2048), rel=0.02)
    assert torch.all(c[1].weight == 1) and torch.all(c[1].bias == 0)


def attnfd(student, teacher, teacher_train_mode=False, aspp_dropout=False, **kwargs):
    return Distiller(student, teacher, [AttnFD(student, teacher, **kwargs)], teacher_train_mode, aspp_dropout)


def tiny_pair():
    torch.manual_seed(0)
    teacher = DeepLab(num_classes=3, backbone="resnet18")
    student = DeepLab(num_classes=3, backbone="mobilenet")
    return student, teacher


def _cbam_by_hand(x, cbam=None):
    """CBAM written out (paper / reference): channel gate then spatial gate; ``cbam=None`` is the
    parameter-free variant. Eval-mode BatchNorm from the module's running statistics."""
    avg, mx = x.mean(dim=(2, 3)), x.flatten(2).max(dim=2).values
    if cbam is None:
        x = x * torch.sigmoid(avg + mx)[:, :, None, None]
        pooled = x.max(dim=1).values + x.mean(dim=1)
        return x * torch.sigmoid(pooled)[:, None]
    l1, l2 = cbam.ChannelGate.mlp[1], cbam.ChannelGate.mlp[3]

    def mlp(v):
        return F.linear(F.relu(F.linear(v, l1.weight, l1.bias)), l2.weight, l2.bias)

    x = x * torch.sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]
    conv, bn = cbam.SpatialGate.spatial.conv, cbam.SpatialGate.spatial.bn
    pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)
    att = F.batch_norm(F.conv2d(pooled, conv.weight, padding=3), bn.running_mean, bn.running_var, bn.weight,
                       bn.bias, eps=bn.eps)
    return x * torch.sigmoid(att)


def test_distiller_loss_matches_the_pipeline_written_out():
    """Each tap: lambda * sum((c(s)/||c(s)|| - t/||t||)^2) / B with CBAM, connector and norms written out
    by hand from the modules' weights (not by calling the distiller's own modules)."""
    student, teacher = tiny_pair()
    d = attnfd(student, teacher, weight=2.0, teacher_attention="parameter-free").eval()
    for m in d.modules():  # non-trivial BN statistics, so a wrong BN would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        logits, terms = d(x)
        t = teacher.forward_features(x)
        s = student.forward_features(x)
        for tap in ("backbone", "aspp", "decoder"):
            t_ref = _cbam_by_hand(t.taps[tap])
            conv, bn = d.methods["attnfd"].connectors[tap]
            s_att = _cbam_by_hand(s.taps[tap], student.attention()[tap])
            s_ref = F.batch_norm(F.conv2d(s_att, conv.weight), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 eps=bn.eps)
            expected = 2 * ((s_ref / s_ref.pow(2).sum().sqrt() - t_ref / t_ref.pow(2).sum().sqrt()) ** 2).sum() / 2
            assert terms[f"attnfd/{tap}"].item() == pytest.approx(expected.item(), rel=1e-4)
        torch.testing.assert_close(logits, s.logits)
    assert d.methods["attnfd"].connectors["backbone"][0].weight.shape == (512, 320, 1, 1)


def test_teacher_gets_no_gradient_and_keeps_bn_statistics():
    student, teacher = tiny_pair()
    d = attnfd(student, teacher, teacher_attention="checkpoint").train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert not teacher.training and student.training
    logits, terms = d(torch.randn(2, 3, 48, 48))
    (logits.mean() + sum(terms.values())).backward()
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert student.backbone.cbam.ChannelGate.mlp[1].weight.grad is not None  # student CBAM trains
    assert d.methods["attnfd"].connectors["aspp"][0].weight.grad is not None


def test_teacher_train_mode_reproduces_the_reference_drift():
    student, teacher = tiny_pair()
    d = attnfd(student, teacher, teacher_train_mode=True).train()
    before = teacher.backbone.bn1.running_mean.clone()
    d(torch.randn(2, 3, 48, 48))
    assert teacher.training and not torch.equal(teacher.backbone.bn1.running_mean, before)


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("aspp_dropout", [False, True])
def test_distillation_forward_skips_the_aspp_dropout_as_the_reference(aspp_dropout):
    """Reference extract_feature: no ASPP Dropout(0.5) for teacher and student; plain forward keeps it."""
    student, teacher = tiny_pair()
    d = attnfd(student, teacher, teacher_train_mode=True, aspp_dropout=aspp_dropout).train()
    s_calls, t_calls = count_calls(student.aspp.dropout), count_calls(teacher.aspp.dropout)
    decoder_calls = count_calls(student.decoder.last_conv[3])
    x = torch.randn(2, 3, 48, 48)
    d(x)
    assert (len(s_calls), len(t_calls), len(decoder_calls)) == (int(aspp_dropout), int(aspp_dropout), 1)
    student(x)  # the baseline's forward (train.py) keeps it
    assert len(s_calls) == int(aspp_dropout) + 1
    # without the ASPP dropout, the student's taps are deterministic given the decoder's dropout RNG
    torch.manual_seed(3)
    a = student.forward_features(x, aspp_dropout=aspp_dropout).taps["decoder"]
    torch.manual_seed(3)
    b = d.student_features(x).taps["decoder"]
    torch.testing.assert_close(a, b)


def test_frozen_student_cbam_mlp_leaves_the_linear_layers_out_as_the_reference():
    student, _ = tiny_pair()
    ids = lambda groups: {id(p) for g in groups for p in g["params"]}  # noqa: E731
    mlp = {id(p) for m in student.attention().values() for p in m.ChannelGate.mlp.parameters()}
    spatial = {id(p) for m in student.attention().values() for p in m.SpatialGate.parameters()}
    full, frozen = ids(student.param_groups(0.1)), ids(student.param_groups(0.1, attention_mlp=False))
    assert mlp and mlp <= full and not (mlp & frozen)
    assert spatial <= frozen and full - frozen == mlp


def test_build_distiller_from_flags():
    from distillation import settings_from_args, teacher_train_mode
    from training import get_args_parser
    student, teacher = tiny_pair()

    def build(argv, missing=()):
        a = get_args_parser(kd=True).parse_args(argv)
        methods = settings_from_args(a)
        mode, _ = teacher_train_mode(a.teacher_train_mode, methods)
        return build_distiller(student, teacher, methods, mode, a.distill_aspp_dropout, missing)

    d = build(["--attn_lambda", "0.5", "--teacher-attention", "parameter-free", "--attn-norm", "channel",
               "--distill-aspp-dropout"])
    m = d.methods["attnfd"]
    assert list(d.methods) == ["attnfd"] and m.weight == 0.5 and m.normalization == "channel" and d.aspp_dropout
    assert sum(p.numel() for p in m.teacher_cbam.parameters()) == 0 and d.teacher_train_mode  # auto: AttnFD's
    d = build(["--attn-lambda", "0", "--kd-lambda", "1", "--cwd_lambda", "3", "--cwd-T", "2"])  # both spellings
    assert list(d.methods) == ["kd", "cwd"] and not d.teacher_train_mode and not d.has_warmup
    assert d.methods["cwd"].temperature == 2 and d.methods["kd"].temperature == 1
    assert build(["--attn_lambda", "0", "--kd_lambda", "1", "--teacher-train-mode"]).teacher_train_mode
    with pytest.raises(ValueError, match="every distillation weight is 0.*--kd_lambda"):
        build(["--attn_lambda", "0"])
    with pytest.raises(ValueError, match="--teacher-attention checkpoint: the teacher checkpoint has no CBAM weights"):
        build(["--teacher-attention", "checkpoint"], missing=["backbone.cbam.x"])


def test_ce_is_divided_by_the_batch_and_focal_matches_its_formula():
    torch.manual_seed(0)
    logit = torch.randn(4, 3, 5, 5)
    target = torch.randint(0, 3, (4, 5, 5))
    target[0, 0] = 255
    ce = SegmentationLosses().build_loss("ce")(logit, target)
    valid = target != 255
    logp = logit.log_softmax(1).permute(0, 2, 3, 1)[valid]
    manual = -logp[torch.arange(len(logp)), target[valid]].mean() / 4
    assert ce.item() == pytest.approx(manual.item(), rel=1e-5)
    focal = SegmentationLosses().build_loss("focal")(logit, target)
    pt = torch.exp(-manual * 4)
    assert focal.item() == pytest.approx((-((1 - pt) ** 2) * 0.5 * (-manual * 4) / 4).item(), rel=1e-5)


def test_poly_schedule_sets_lr_every_iteration_with_10x_head():
    """Every iteration of every epoch, from the base lr (a schedule that compounds its factor fails)."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.01}, {"params": [model.bias], "lr": 0.1}], lr=0.01)
    sched = LRSchedule("poly", num_epochs=2, iters_per_epoch=5)
    for epoch in range(2):
        for i in range(5):
            lr = sched(opt, i, epoch)
            T = epoch * 5 + i
            assert lr == opt.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - T / 10) ** 0.9)
            assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * (1 - T / 10) ** 0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.1 ** 0.9)  # T = 9 of N = 10
    cos = LRSchedule("cos", 2, 5)
    assert cos.factor(1, 0) == pytest.approx(0.5) and cos.factor(0, 0) == 1
    step = LRSchedule("step", 9, 5)
    assert step.factor(3, 0) == pytest.approx(0.1) and step.factor(2, 4) == 1
    assert step.factor(6, 0) == pytest.approx(0.01)


def test_evaluator_metrics_by_hand():
    ev = Evaluator(3)
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    ev.add_batch(gt, pred)
    r = ev.results()
    # confusion: 0->{0:1,1:1}, 1->{1:3}, 2->{2:1,0:1}; 255 skipped
    assert r["Acc"] == pytest.approx(5 / 7)
    assert r["IoU"] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert r["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert r["Acc_class"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert r["fwIoU"] == pytest.approx(2 / 7 * 1 / 3 + 3 / 7 * 3 / 4 + 2 / 7 * 1 / 2)


def test_train_kd_defaults_are_the_ones_the_study_chose():
    """README 'Does it work?': teacher in train mode (auto, with AttnFD on), no ASPP dropout, global norm,
    warm-up, lambda 2; the other methods off."""
    from distillation import settings_from_args, teacher_train_mode
    from training import get_args_parser

    a = get_args_parser(kd=True).parse_args([])
    assert (teacher_train_mode(a.teacher_train_mode, settings_from_args(a))[0], a.distill_aspp_dropout, a.attn_norm,
            a.warmup, a.attn_lambda, a.student_cbam_mlp) == (True, False, "global", True, 2.0, "train")
    assert list(settings_from_args(a)) == ["attnfd"]
    assert get_args_parser(kd=True).parse_args(["--no-teacher-train-mode"]).teacher_train_mode is False


@pytest.mark.parametrize("argv,kd,world,cuda,expected", [
    ([], False, 1, False, dict(epochs=50, batch_size=6, lr=0.007, checkname="deeplab-resnet101")),
    (["--batch-size", "12"], False, 1, False, dict(epochs=50, batch_size=12, lr=0.014)),
    (["--dataset", "cityscapes"], False, 1, False, dict(epochs=200, batch_size=6, lr=0.01)),
    (["--dataset", "camvid", "--batch-size", "3"], True, 1, False,
     dict(epochs=200, lr=0.005, checkname="attnfd-resnet18")),
    (["--lr", "0.02", "--epochs", "7"], False, 1, False, dict(epochs=7, lr=0.02)),
    # README: the rule is that of one process with the global batch, whatever the number of processes
    ([], False, 4, True, dict(batch_size=24, lr=0.028)),           # 6 per GPU
    (["--batch-size", "8"], False, 4, True, dict(batch_size=8, lr=0.007 / 6 * 8)),  # the README's torchrun example
    (["--batch-size", "8"], False, 2, False, dict(batch_size=8, lr=0.007 / 6 * 8)),
    ([], False, 2, False, dict(batch_size=6, lr=0.007)),           # CPU processes split one batch of 6
])
def test_resolve_args_applies_the_reference_rules(argv, kd, world, cuda, expected):
    """Epochs and lr per dataset, lr = dataset lr / 6 x global batch, checkname from the backbone (the run's home);
    a pure function of the flags and the world size: the parsed namespace is left as it was."""
    from training import get_args_parser, resolve_args
    from training.state import run_home

    parsed = get_args_parser(kd).parse_args(argv)
    before = dict(vars(parsed))
    a = resolve_args(parsed, kd, world=world, cuda=cuda, gpu_count=world if cuda else 0)
    assert vars(parsed) == before
    for k, v in expected.items():
        got = run_home(a).checkname if k == "checkname" else getattr(a, k)
        assert got == pytest.approx(v) if isinstance(v, float) else got == v, k


@pytest.mark.parametrize("argv,world,message", [
    (["--batch-size", "5"], 2, "--batch-size 5 is the global batch and must split evenly across 2 processes"),
    (["--crop-size", "16"], 1, "--crop-size 16 is too small for --out-stride 16"),
    (["--gpu-ids", "0,1"], 1, "several GPUs run as one process each: torchrun --nproc_per_node=2"),
    (["--gpu-ids", "a"], 1, "--gpu-ids must be a comma-separated list of integers"),
    (["--gpu-ids", "3"], 1, "--gpu-ids 3: this machine has 0 GPU"),
])
def test_resolve_args_refuses_impossible_values_in_one_line(argv, world, message):
    from training import get_args_parser, resolve_args
    from utils.cli import UsageError

    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        resolve_args(get_args_parser().parse_args(argv), world=world)
