"""Bugs of issue [8/9], each with the test that failed before its fix."""
import pytest
import torch
from conftest import save_random_checkpoint

from dataloaders.synthetic import generate
from modeling import DeepLab
from training import get_args_parser, resolve_args
from training.main import fit, setup


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bugs")
    root = generate(tmp / "data", n_train=8, n_val=2, size=32, seed=0)
    return tmp, root, save_random_checkpoint(tmp / "teacher.pth.tar")


def kd_run(data, monkeypatch, *extra):
    tmp, root, teacher = data
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", root)
    args = get_args_parser(kd=True).parse_args([
        "--dataset", "synthetic", "--backbone", "mobilenet", "--base-size", "32", "--crop-size", "32",
        "--batch-size", "4", "--lr", "0.05", "--workers", "0", "--no-pretrained", "--no-cuda", "--no-val",
        "--teacher_path", str(teacher), "--run-dir", str(tmp / "run"), *extra])
    return setup(resolve_args(args, kd=True))


K = "attnfd.connectors.backbone.0.weight"


def test_connectors_learn_when_the_run_starts_past_the_warmup_epoch(data, monkeypatch):
    """--start_epoch 1 (or --resume of a checkpoint without connectors) skips the epoch-0 warm-up, where
    the reference trains its connectors; they then trained with nothing and stayed random."""
    t = kd_run(data, monkeypatch, "--start_epoch", "1", "--epochs", "2")
    before = {k: v.clone() for k, v in t.distiller.trainable_modules().state_dict().items()}
    fit(t)
    after = t.distiller.trainable_modules().state_dict()
    learned = [k for k in before if k.endswith("0.weight") and not torch.equal(before[k], after[k])]
    assert len(learned) == 3, "every connector conv must learn when there is no warm-up epoch in the run"
    # resuming that run keeps its optimizer (with the connectors' group) and the connectors keep learning
    ckpt = f"{t.experiment_dir}/checkpoint.pth.tar"
    r = kd_run(data, monkeypatch, "--resume", ckpt, "--epochs", "3")
    assert r.state.epoch == 2 and len(r.optimizer.param_groups) == 3
    fit(r)
    assert not torch.equal(r.distiller.trainable_modules().state_dict()[K], after[K])


def test_connectors_stay_fixed_after_a_warmup_as_in_the_reference(data, monkeypatch):
    t = kd_run(data, monkeypatch, "--epochs", "1")
    init = {k: v.clone() for k, v in t.distiller.trainable_modules().state_dict().items()}
    warm = fit(t).distiller.trainable_modules().state_dict()  # epoch 0: the warm-up
    assert all(not torch.equal(init[k], warm[k]) for k in warm if k.endswith("0.weight"))
    r = fit(kd_run(data, monkeypatch, "--epochs", "2", "--resume", f"{t.experiment_dir}/checkpoint.pth.tar"))
    after = r.distiller.trainable_modules().state_dict()
    assert all(torch.equal(warm[k], after[k]) for k in warm if k.endswith("0.weight"))


def test_freeze_bn_keeps_batchnorm_affine_parameters_out_of_the_optimizer():
    """--freeze-bn's help promises fixed BN statistics *and* affine parameters; they were still optimised."""
    model = DeepLab(num_classes=3, backbone="resnet18", freeze_bn=True)
    grouped = {id(p) for g in model.param_groups(0.01) for p in g["params"]}
    bn = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn and not any(id(p) in grouped for p in bn)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(id(p) in grouped for p in convs)


def test_a_teacher_trained_at_another_output_stride_is_reported(data, monkeypatch, tmp_path, capsys):
    teacher = save_random_checkpoint(tmp_path / "os8.pth.tar", output_stride=8)
    t = kd_run(data, monkeypatch, "--teacher_path", str(teacher), "--epochs", "1")
    assert "trained at output stride 8; it runs at the student's --out-stride 16" in capsys.readouterr().out
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        taps_t, taps_s = t.distiller.teacher.forward_features(x).taps, t.model.forward_features(x).taps
    assert all(taps_t[k].shape[2:] == taps_s[k].shape[2:] for k in taps_s)


def test_class_names_come_from_the_voc_root_the_dataset_reads(data, monkeypatch):
    """A root above VOC2012 (torchvision's layout) is searched by the dataset; class_names() read the
    configured root only and showed the 21 VOC names for the synthetic dataset's 7."""
    from dataloaders import class_names
    from dataloaders.synthetic import CLASSES

    tmp, root, _ = data
    for configured in (root, str(tmp / "data")):  # VOC2012 itself, and the folder above it
        monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", configured)
        assert list(class_names("synthetic")) == list(CLASSES)


def test_eval_flags_fill_in_what_a_checkpoint_does_not_record_and_never_contradict_it(data, monkeypatch):
    """README: eval's --backbone/--out-stride are for checkpoints that do not record them; they used to
    override what a checkpoint records, rebuilding it differently from the trainer."""
    import eval as evaluation
    from utils.saver import CheckpointError

    tmp, root, teacher = data
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", root)
    base = ["--checkpoint", str(teacher), "--dataset", "synthetic", "--crop-size", "32", "--workers", "0", "--no-cuda"]
    with pytest.raises(CheckpointError, match="records backbone resnet18; --backbone resnet101 contradicts it"):
        evaluation.run(evaluation.get_args_parser().parse_args([*base, "--backbone", "resnet101"]))
    result = evaluation.run(evaluation.get_args_parser().parse_args([*base, "--backbone", "resnet18"]))
    assert result["images"] == 2 and 0 <= result["mIoU"] <= 1


def test_a_non_finite_loss_stops_the_run_naming_epoch_and_iteration_and_saves_nothing(data, monkeypatch, tmp_path):
    from training import TrainingError

    tmp, root, _ = data
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", root)
    args = get_args_parser().parse_args([
        "--dataset", "synthetic", "--backbone", "mobilenet", "--base-size", "32", "--crop-size", "32",
        "--batch-size", "2", "--epochs", "3", "--workers", "0", "--no-pretrained", "--no-cuda",
        "--no-val", "--log-interval", "1", "--run-dir", str(tmp_path / "run")])
    args.lr = 1e12  # past the command line's bound (at most 10): a loss that blows up at once
    t = setup(resolve_args(args))
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch \d+, iteration \d+"):
        fit(t)
    assert not list((tmp_path / "run").rglob("checkpoint.pth.tar"))  # nothing saved after the last good state


def test_frozen_parts_get_no_gradients_at_all(data, monkeypatch):
    """Parts no optimizer holds (the student's CBAM MLP under --student-cbam-mlp frozen, BN affine under
    --freeze-bn, AttnFD's connectors after their warm-up) had their gradients computed, all-reduced and
    accumulated for the whole run."""
    t = kd_run(data, monkeypatch, "--epochs", "2", "--student-cbam-mlp", "frozen", "--freeze-bn")
    mlp = [p for m in t.model.attention().values() for p in m.ChannelGate.mlp.parameters()]
    bn = [p for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    connectors = list(t.distiller.methods["attnfd"].connectors.parameters())
    assert not any(p.requires_grad for p in mlp + bn) and all(p.requires_grad for p in connectors)
    fit(t)
    assert not any(p.requires_grad for p in connectors)  # after the warm-up epoch
    assert all(p.grad is None for p in mlp + bn + connectors)
    assert any(p.grad is not None for p in t.model.parameters())


def test_resuming_weights_without_cbam_says_so(data, monkeypatch, tmp_path, capsys):
    """A pytorch-deeplab-xception checkpoint (no *.cbam.* keys) as --resume: its CBAM kept random in silence."""
    ckpt = save_random_checkpoint(tmp_path / "xception-lineage.pth.tar", "mobilenet")
    saved = torch.load(ckpt, weights_only=True)
    saved["state_dict"] = {k: v for k, v in saved["state_dict"].items() if ".cbam." not in k}
    torch.save(saved, ckpt)
    kd_run(data, monkeypatch, "--resume", str(ckpt), "--ft")
    assert "has no CBAM weights" in capsys.readouterr().out
