import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import reference_state_dict

from modeling import CBAM, TAPS, DeepLab, load_checkpoint, model_from_checkpoint, num_params
from modeling.imagenet import MissingWeightsError


@pytest.mark.parametrize("backbone", ["resnet101", "resnet18"])
def test_published_key_set_loads_strictly(backbone, tmp_path):
    sd = reference_state_dict(backbone)
    model = DeepLab(num_classes=21, backbone=backbone, output_stride=16, pretrained_backbone=False)
    model.load_state_dict(sd, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    path = tmp_path / "teacher.pth.tar"
    torch.save({"epoch": 3, "state_dict": sd, "best_pred": 0.7}, path)
    fresh = DeepLab(num_classes=21, backbone=backbone)
    assert load_checkpoint(fresh, path) == []
    assert torch.equal(fresh.decoder.cbam.ChannelGate.mlp[1].weight, sd["decoder.cbam.ChannelGate.mlp.1.weight"])


def test_xception_lineage_checkpoint_without_cbam_loads_and_reports(tmp_path):
    sd = reference_state_dict("resnet18", drop_attention=True)
    model = DeepLab(num_classes=21, backbone="resnet18")
    with pytest.raises(RuntimeError):
        model.load_state_dict(sd, strict=True)
    path = tmp_path / "deeplab-resnet.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)  # DataParallel-saved
    missing = load_checkpoint(model, path)
    assert missing and all(".cbam." in f".{k}" for k in missing)
    assert {k.split(".")[0] for k in missing} == {"backbone", "aspp", "decoder"}
    assert torch.equal(model.aspp.conv1.weight, sd["aspp.conv1.weight"])


def test_mismatched_checkpoint_is_a_clear_error():
    sd = reference_state_dict("resnet18")
    with pytest.raises(ValueError, match="does not match DeepLab\\(resnet101"):
        load_checkpoint(DeepLab(backbone="resnet101"), sd)


@pytest.mark.parametrize("backbone", ["resnet101", "resnet18", "mobilenet"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_shapes(backbone, output_stride):
    model = DeepLab(num_classes=5, backbone=backbone, output_stride=output_stride).eval()
    x = torch.randn(2, 3, 66, 50)
    with torch.no_grad():
        f = model.forward_features(x)
    assert f.logits.shape == (2, 5, 66, 50)
    hi = -(-66 // output_stride), -(-50 // output_stride)  # ceil division (padded convs)
    assert f.taps["backbone"].shape == (2, model.backbone.out_channels, *hi)
    assert f.taps["aspp"].shape == (2, 256, *hi)
    assert f.taps["decoder"].shape == (2, 256, 17, 13)
    assert [s.shape[1] for s in f.stages] == model.backbone.stage_channels
    assert list(f.taps) == list(TAPS)


def test_parameter_counts_match_design():
    expected = {"resnet101": 59.34, "resnet18": 16.61, "mobilenet": 5.82}
    for backbone, millions in expected.items():
        model = DeepLab(num_classes=21, backbone=backbone)
        assert round(num_params(model, attention=False) / 1e6, 2) == millions
        assert num_params(model) > num_params(model, attention=False)


@pytest.mark.numerics
def test_stages_are_pre_relu_and_equal_a_standard_resnet():
    model = DeepLab(backbone="resnet18").eval()
    tv = torchvision.models.resnet18(weights=None).eval()
    model.backbone.load_state_dict(tv.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = model.backbone(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        y1 = tv.layer1(y)
        y3 = tv.layer3(tv.layer2(y1))
    assert (stages[0] < 0).any()  # pre-ReLU
    torch.testing.assert_close(F.relu(stages[0]), y1)
    torch.testing.assert_close(F.relu(stages[2]), y3)


def test_multi_grid_and_dilations():
    bb = DeepLab(backbone="resnet101", output_stride=16).backbone
    assert [b.conv2.dilation[0] for b in bb.layer4] == [2, 4, 8]
    assert [b.conv2.dilation[0] for b in bb.layer3][:2] == [1, 1]
    assert bb.layer3[0].conv2.stride == (2, 2) and bb.layer4[0].conv2.stride == (1, 1)
    bb8 = DeepLab(backbone="resnet101", output_stride=8).backbone
    assert [b.conv2.dilation[0] for b in bb8.layer4] == [4, 8, 16]
    assert all(b.conv2.dilation[0] == 2 for b in bb8.layer3)
    r18 = DeepLab(backbone="resnet18", output_stride=16).backbone
    assert [b.conv1.dilation[0] for b in r18.layer4] == [2, 2] and len(r18.layer4) == 2
    aspp8 = DeepLab(backbone="resnet18", output_stride=8).aspp
    assert [aspp8.aspp2.atrous_conv.dilation[0], aspp8.aspp4.atrous_conv.padding[0]] == [12, 36]


def test_cbam_learned_and_parameter_free():
    x = torch.randn(2, 32, 5, 7)
    learned = CBAM(32).eval()
    names = {k for k, _ in learned.named_parameters()}
    assert names == {"ChannelGate.mlp.1.weight", "ChannelGate.mlp.1.bias", "ChannelGate.mlp.3.weight",
                     "ChannelGate.mlp.3.bias", "SpatialGate.spatial.conv.weight", "SpatialGate.spatial.bn.weight",
                     "SpatialGate.spatial.bn.bias"}
    assert learned.SpatialGate.spatial.bn.momentum == 0.01
    mlp = learned.ChannelGate.mlp
    a = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    y = x * a
    s = torch.cat([y.amax(1, keepdim=True), y.mean(1, keepdim=True)], 1)
    expected = y * torch.sigmoid(learned.SpatialGate.spatial.bn(learned.SpatialGate.spatial.conv(s)))
    torch.testing.assert_close(learned(x), expected)

    free = CBAM(32, learned=False)
    assert sum(p.numel() for p in free.parameters()) == 0
    y = x * torch.sigmoid(x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
    expected = y * torch.sigmoid(y.amax(1, keepdim=True) + y.mean(1, keepdim=True))
    torch.testing.assert_close(free(x), expected)


def test_attention_in_path_changes_forward_but_taps_do_not():
    torch.manual_seed(0)
    plain = DeepLab(num_classes=4, backbone="resnet18").eval()
    in_path = DeepLab(num_classes=4, backbone="resnet18", attention_in_path=True).eval()
    in_path.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        logits = plain(x)
        f = plain.forward_features(x)
        torch.testing.assert_close(f.logits, logits)  # asking for the taps changes nothing
        assert plain.forward_features(x, logits=False).logits is None
        assert not torch.allclose(in_path(x), logits, atol=1e-4)
    in_path.train()
    in_path(torch.randn(2, 3, 48, 48)).sum().backward()
    assert in_path.backbone.cbam.ChannelGate.mlp[1].weight.grad.abs().sum() > 0
    plain.train()
    plain(torch.randn(2, 3, 48, 48)).sum().backward()
    assert plain.backbone.cbam.ChannelGate.mlp[1].weight.grad is None


def test_param_groups_cover_every_parameter_once():
    model = DeepLab(backbone="resnet18")
    groups = model.param_groups(0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert groups[1]["lr"] == pytest.approx(0.1)
    assert any(p is model.aspp.cbam.ChannelGate.mlp[1].weight for p in groups[1]["params"])
    assert any(p is model.backbone.cbam.ChannelGate.mlp[3].weight for p in groups[0]["params"])


def test_freeze_bn_keeps_running_stats():
    model = DeepLab(backbone="resnet18", freeze_bn=True).train()
    before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 3, 48, 48))
    assert torch.equal(model.backbone.bn1.running_mean, before)
    assert model.aspp.dropout.training
    later = DeepLab(backbone="resnet18").train().freeze_bn()
    assert not later.backbone.bn1.training and later.train().decoder.last_conv[1].training is False


def test_offline_imagenet_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        DeepLab(backbone="resnet18", pretrained_backbone=True)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and "--no-pretrained" in msg and str(tmp_path) in msg
    assert "\n" not in msg


def test_imagenet_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    tv = torchvision.models.mobilenet_v2(weights=None)
    torch.save(tv.state_dict(), tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth")
    model = DeepLab(backbone="mobilenet", pretrained_backbone=True)
    torch.testing.assert_close(model.backbone.features[5].conv[1][0].weight, tv.features[5].conv[1][0].weight)


def test_model_from_checkpoint_reads_backbone_stride_and_classes():
    torch.manual_seed(0)
    src = DeepLab(num_classes=5, backbone="resnet18", output_stride=8, attention_in_path=True).eval()
    ckpt = {"state_dict": src.state_dict(), "args": {"backbone": "resnet18", "out_stride": 8,
                                                       "attention_in_path": True, "crop_size": 48}}
    model, missing, saved = model_from_checkpoint(ckpt)
    assert (model.backbone_name, model.num_classes, model.attention_in_path, missing) == ("resnet18", 5, True, [])
    assert saved["crop_size"] == 48
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), src(x))
    # a published checkpoint records nothing: ResNet-101, OS 16, classes from the classifier
    model, missing, _ = model_from_checkpoint({"state_dict": reference_state_dict("resnet101")})
    assert (model.backbone_name, model.num_classes, missing) == ("resnet101", 21, [])
    with pytest.raises(ValueError, match="does not match DeepLab\\(resnet101"):
        model_from_checkpoint(ckpt, backbone="resnet101")
    with pytest.raises(ValueError, match="no classifier weight"):
        model_from_checkpoint({"state_dict": {"x": torch.zeros(1)}})


def test_spatial_attention_is_the_gate_applied_by_forward():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 5, 5)
    for learned in (True, False):
        cbam = CBAM(16, learned=learned).eval()
        att = cbam.spatial_attention(x)
        assert att.shape == (2, 1, 5, 5) and bool(((att > 0) & (att < 1)).all())
        torch.testing.assert_close(cbam(x), cbam.ChannelGate(x) * att)


@pytest.mark.numerics
@pytest.mark.parametrize("size", [3, 5, 12, 20])
@pytest.mark.parametrize("dilation", [2, 6, 18])
def test_atrous_conv_skipping_padding_taps_gives_the_full_conv_outputs_and_gradients(size, dilation):
    from modeling.layers import AtrousConv2d

    torch.manual_seed(0)
    fast = AtrousConv2d(8, 4, 3, padding=dilation, dilation=dilation, bias=False)
    full = torch.nn.Conv2d(8, 4, 3, padding=dilation, dilation=dilation, bias=False)
    full.load_state_dict(fast.state_dict())
    x1 = torch.randn(2, 8, size, size, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    g = torch.randn(2, 4, size, size)
    (fast(x1) * g).sum().backward()
    (full(x2) * g).sum().backward()
    torch.testing.assert_close(fast(x1), full(x2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, full.weight.grad, rtol=1e-5, atol=1e-5)
    if dilation >= size:  # the shortcut was taken: off-centre weights get exactly zero gradient, as in the full conv
        assert fast.weight.grad[:, :, 0].abs().sum() == 0
