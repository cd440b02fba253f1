"""CIRKD, LAD and Af-DCD: their terms by hand on tiny tensors, CIRKD's class queues (by hand, in the checkpoint,
identical on two gloo ranks and equal to one process's), the label encodings of LAD's teacher and its two-path
training, Af-DCD's minimum where the student reproduces the teacher, and the per-dataset weights."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from distillation import (
    CIRKD,
    AfDCD,
    ClassMemory,
    LabelAssistedTeacher,
    RunFacts,
    build_distiller,
    contrastive_loss,
    label_input,
    memory_contrast_loss,
    mimic_loss,
    minibatch_loss,
    random_label_input,
)
from distillation.labels import SCALE
from modeling import DeepLab, Features
from utils.distributed import convert_sync_batchnorm
from utils.loss import SegmentationLosses

# ---- CIRKD --------------------------------------------------------------------------------------------------

def test_cirkd_minibatch_term_by_hand():
    """The reference's loop: for every pair (i, j) the KL (batchmean over i's pixels) of the softmax over j's
    pixels of the similarities / T, averaged over the B^2 pairs."""
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 2, 3, dtype=torch.float64), torch.randn(3, 5, 2, 3, dtype=torch.float64)
    fs, ft = F.normalize(s, dim=1), F.normalize(t, dim=1)
    expected = 0
    for i in range(3):
        for j in range(3):
            ss = fs[i].reshape(4, -1).T @ fs[j].reshape(4, -1)
            tt = ft[i].reshape(5, -1).T @ ft[j].reshape(5, -1)
            expected += F.kl_div(F.log_softmax(ss / 0.1, 1), F.softmax(tt / 0.1, 1), reduction="batchmean")
    assert minibatch_loss(s, t, 0.1).item() == pytest.approx(expected.item() / 9, rel=1e-10)
    assert minibatch_loss(t, t, 0.1).item() == pytest.approx(0, abs=1e-12)


def test_cirkd_memory_contrast_by_hand():
    torch.manual_seed(0)
    s, t, keys = (F.normalize(torch.randn(n, 4, dtype=torch.float64), dim=1) for n in (5, 5, 6))
    p_t = F.softmax(t @ keys.T / 0.1, 1)
    expected = (p_t * (p_t.log() - F.log_softmax(s @ keys.T / 0.1, 1))).sum()
    assert memory_contrast_loss(s, t, keys, 0.1).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.numerics
def test_cirkd_memory_term_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    s, t, keys = (F.normalize(torch.randn(n, 8), dim=1) for n in (6, 6, 10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = memory_contrast_loss(s.bfloat16(), t.bfloat16(), keys)
    exact = memory_contrast_loss(s.bfloat16().float(), t.bfloat16().float(), keys)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(exact.item(), rel=1e-4)


def test_cirkd_queues_by_hand():
    """Region slot = the class's normalised mean, pointer + 1; pixel slots = up to 16 of the class's own pixels,
    normalised, the pointer wrapping as the reference (a write that would reach the end goes to the last slots)."""
    memory = ClassMemory(num_classes=3, dim=2, pixel_size=5, region_size=2, seed=0)
    feats = F.normalize(torch.tensor([[[[1.0, 2.0], [3.0, 0.5]], [[0.0, 1.0], [1.0, 2.0]]]]), dim=1)  # (1, 2, 2, 2)
    labels = torch.tensor([[[1, 1], [1, 255]]])
    memory.enqueue(feats, labels)
    cls1 = feats[0].flatten(1)[:, :3]  # class 1's pixels
    torch.testing.assert_close(memory.region[1, 0], F.normalize(cls1.mean(1), dim=0))
    assert memory.region_ptr.tolist() == [0, 1, 0] and memory.pixel_ptr.tolist() == [0, 3, 0]
    written = memory.pixel[1, :3]
    assert all(any(torch.allclose(w, c) for c in cls1.T) for w in written)
    assert len({tuple(w.tolist()) for w in written}) == 3  # three different pixels
    untouched = memory.pixel[[0, 2]].clone()
    memory.enqueue(feats, labels)  # 3 + 3 >= 5: the last three slots, pointer back to 0
    assert memory.pixel_ptr.tolist() == [0, 0, 0] and memory.region_ptr.tolist() == [0, 0, 0]
    assert all(any(torch.allclose(w, c) for c in cls1.T) for w in memory.pixel[1, 2:])
    torch.testing.assert_close(memory.pixel[[0, 2]], untouched)  # absent classes and the ignore label: nothing


def _enqueue_one_by_one(pixel, region, pixel_ptr, region_ptr, feats, labels, picks):
    """The reference's enqueue written as its loop (per image, per class present), with given draws."""
    for feat, label, pick in zip(feats.flatten(2), labels.flatten(1), picks):
        for c in torch.unique(label).tolist():
            if c == 255 or c >= pixel.shape[0]:
                continue
            where = (label == c).nonzero().squeeze(1)
            region[c, region_ptr[c]] = F.normalize(feat[:, where].mean(1), dim=0)
            region_ptr[c] = (region_ptr[c] + 1) % region.shape[1]
            k = min(len(where), pick.shape[1])
            picked = F.normalize(feat[:, pick[c, :k]].T, dim=1)
            if pixel_ptr[c] + k >= pixel.shape[1]:
                pixel[c, -k:], pixel_ptr[c] = picked, 0
            else:
                pixel[c, pixel_ptr[c]:pixel_ptr[c] + k], pixel_ptr[c] = picked, pixel_ptr[c] + k


@pytest.mark.parametrize("mode", ["class", "authors"])
def test_cirkd_enqueue_without_host_syncs_equals_the_references_loop(mode):
    """Many steps over short queues (pointers wrapping at every place an image can end): the vectorised enqueue
    writes what the reference's per-image, per-class loop writes, given the same draws; the draws are pixels of
    the class (``class``) or image positions 0..n-1 (``authors``)."""
    torch.manual_seed(0)
    memory = ClassMemory(num_classes=4, dim=3, pixel_size=70, region_size=4, seed=1, enqueue=mode)
    pixel, region = memory.pixel.clone(), memory.region.clone()
    pixel_ptr, region_ptr = [0] * 4, [0] * 4
    for step in range(12):
        feats = F.normalize(torch.randn(4, 3, 5, 5), dim=1)
        labels = torch.randint(0, 5, (4, 5, 5))  # class 4: not a queue's (as the ignore label)
        labels[:, 0] = 255
        labels[step % 4] = torch.where(labels[step % 4] == 2, 1, labels[step % 4])  # some classes absent
        classes = labels.flatten(1)[:, None, :] == torch.arange(4)[None, :, None]
        counts = classes.sum(2)
        state = memory.generator.get_state()
        picks = memory.draw(classes, counts)
        for n in range(4):
            for c in range(4):
                k = min(int(counts[n, c]), 16)
                chosen = picks[n, c, :k]
                assert len(set(chosen.tolist())) == k
                if mode == "class":
                    assert (labels[n].flatten()[chosen] == c).all()
                else:
                    assert (chosen < counts[n, c]).all()
        memory.generator.set_state(state)  # enqueue draws the same picks
        memory.enqueue(feats, labels)
        _enqueue_one_by_one(pixel, region, pixel_ptr, region_ptr, feats, labels, picks)
        torch.testing.assert_close(memory.pixel, pixel)
        torch.testing.assert_close(memory.region, region)
        assert memory.pixel_ptr.tolist() == pixel_ptr and memory.region_ptr.tolist() == region_ptr


def _cirkd(num_classes=3, dataset=None, **values):
    torch.manual_seed(0)
    teacher, student = DeepLab(num_classes, "resnet18"), DeepLab(num_classes, "mobilenet")
    settings = {"weight": 1.0, "kd": 1.0, "minibatch": 1.0, "memory_pixel": None, "memory_region": None,
                "temperature": 0.1, "pool": 2.0, "pixel_memory": 30.0, "region_memory": 6.0, **values}
    return build_distiller(student, teacher, {"cirkd": settings}, dataset=dataset)


def test_cirkd_weights_per_dataset_and_its_queues_in_the_state_dict():
    """Memory weights 0.01 on Pascal VOC, 0.1 on Cityscapes (CIRKD's scripts, issue #8); explicit flags win.
    The queues, pointers and generator are the module's extra state and load back exactly."""
    settings = {"weight": 1.0, "memory_pixel": None, "memory_region": None, "pixel_memory": 4.0, "region_memory": 2.0}
    built = lambda dataset, **v: CIRKD.build(_Tiny, _Tiny, {**settings, **v}, dataset=dataset)  # noqa: E731
    assert built("pascal").memory_pixel == 0.01 and built("cityscapes").memory_region == 0.1
    assert built("pascal", memory_pixel=0.5).memory_pixel == 0.5
    d = _cirkd().train()
    x = torch.randn(2, 3, 64, 64)
    d(x, labels=torch.randint(0, 3, (2, 64, 64)))
    state = d.trainable_modules().state_dict()
    other = _cirkd()
    assert not torch.equal(other.methods["cirkd"].memory.pixel, d.methods["cirkd"].memory.pixel)
    other.trainable_modules().load_state_dict(state)
    a, b = d.methods["cirkd"].memory, other.methods["cirkd"].memory
    assert torch.equal(a.pixel, b.pixel) and torch.equal(a.region, b.region) and torch.equal(a.pixel_ptr, b.pixel_ptr)
    assert torch.equal(a.randperm(30, "cpu"), b.randperm(30, "cpu"))  # the same generator state
    with pytest.raises(ValueError, match="--cirkd_pixel_memory"):
        _cirkd(pixel_memory=10.0).trainable_modules().load_state_dict(state)


def _features(seed, batch=4):
    g = torch.Generator().manual_seed(seed)
    s = Features(torch.randn(batch, 3, 16, 16, generator=g, dtype=torch.float64),
                 {"decoder": torch.randn(batch, 8, 8, 8, generator=g, dtype=torch.float64).relu()})
    t = Features(torch.randn(batch, 3, 16, 16, generator=g, dtype=torch.float64),
                 {"decoder": torch.randn(batch, 8, 8, 8, generator=g, dtype=torch.float64).relu()})
    labels = torch.randint(0, 3, (batch, 16, 16), generator=g)
    labels[:, :3] = 255
    return s, t, labels


class _Tiny:
    """The two attributes CIRKD reads of its nets."""
    num_classes, tap_channels = 3, {"decoder": 8}


def _cirkd_step(part=slice(None)):
    """One CIRKD forward/backward on (part of) a fixed batch: loss terms, the student feature's gradient, the
    projector's gradients and the queues afterwards."""
    torch.manual_seed(0)
    method = CIRKD(_Tiny, _Tiny, weight=1.0, memory_pixel=0.1, memory_region=0.1, pixel_memory=20.0,
                   region_memory=4.0).double().train()
    convert_sync_batchnorm(method, cuda=False)  # the projector's BN over the global batch (--sync-bn)
    for step in range(2):
        s, t, labels = _features(step)
        s.taps["decoder"] = s.taps["decoder"][part].clone().requires_grad_(True)
        s.logits, t.logits, t.taps["decoder"], labels = s.logits[part], t.logits[part], t.taps["decoder"][part], \
            labels[part]
        method.zero_grad()
        terms = method(s, t, labels=labels)
        sum(terms.values()).backward()
    memory = method.memory
    return ({k: v.item() for k, v in terms.items()}, s.taps["decoder"].grad,
            [p.grad.clone() for p in method.projector.parameters()], memory.state())


def _cirkd_worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    torch.save(_cirkd_step(slice(2 * rank, 2 * rank + 2)), os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_cirkd_on_two_ranks_equals_one_process_queues_included(tmp_path):
    """Two gloo ranks with half the batch each: every term equals the single-process one, the gradients of each
    half (averaged as DDP does) are that process's, and the queues after two steps are the same on both ranks and
    equal to the single-process queues (teacher features of every rank enqueued, in rank order)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_cirkd_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    terms, grad, projector_grads, queues = _cirkd_step()
    for r, (r_terms, r_grad, _, r_queues) in enumerate(ranks):
        assert r_terms.keys() == terms.keys()
        for k, v in terms.items():
            assert r_terms[k] == pytest.approx(v, rel=1e-9), k
        torch.testing.assert_close(r_grad / 2, grad[2 * r:2 * r + 2], rtol=1e-7, atol=1e-12)
        for k in ("pixel", "region", "pixel_ptr", "region_ptr", "rng"):
            assert torch.equal(r_queues[k], queues[k]), k
    for mine, a, b in zip(projector_grads, ranks[0][2], ranks[1][2]):
        torch.testing.assert_close((a + b) / 2, mine, rtol=1e-7, atol=1e-12)  # DDP averages over the ranks
    assert queues["pixel_ptr"].sum() > 0


# ---- Af-DCD -------------------------------------------------------------------------------------------------

def test_afdcd_contrastive_term_by_hand():
    """Per 4x4 patch, (position, group) anchors: positive = the teacher's same position and group, negatives = the
    teacher's other groups at every position; -L1 similarity / 0.07, CE summed, / (H x W) / B."""
    torch.manual_seed(0)
    s, t = torch.randn(1, 32, 8, 4, dtype=torch.float64), torch.randn(1, 32, 8, 4, dtype=torch.float64)
    total = 0
    for b in range(1):
        for pr in range(2):  # patch rows (8 / 4); one patch column
            ps, pt = s[b, :, 4 * pr:4 * pr + 4], t[b, :, 4 * pr:4 * pr + 4]
            vec = lambda x, pos, g: x[2 * g:2 * g + 2, pos // 4, pos % 4]  # noqa: E731  16 groups of 2
            for pos in range(16):
                for g in range(16):
                    a = vec(ps, pos, g)
                    logits = [-(a - vec(pt, pos, g)).abs().sum()]
                    logits += [-(a - vec(pt, q, h)).abs().sum() for q in range(16) for h in range(16) if h != g]
                    logits = torch.stack(logits) / 0.07
                    total += torch.logsumexp(logits, 0) - logits[0]
    expected = total / (8 * 4) / 1
    assert contrastive_loss(s, t, pool=1).item() == pytest.approx(expected.item(), rel=1e-9)


def test_afdcd_is_smallest_where_the_student_reproduces_the_teacher():
    torch.manual_seed(0)
    t = torch.randn(2, 32, 8, 8)
    assert mimic_loss(t, t).item() == 0 and mimic_loss(t + 1, t).item() == pytest.approx(2 * 32 * 64 / 2)
    exact = contrastive_loss(t, t, pool=2).item()
    assert all(contrastive_loss(t + 0.3 * torch.randn_like(t), t, pool=2).item() > exact for _ in range(3))


def test_afdcd_weights_per_dataset_mask_and_small_maps():
    torch.manual_seed(0)
    teacher, student = DeepLab(3, "resnet18"), DeepLab(3, "mobilenet")
    values = {"weight": 1.0, "kd": 1.0, "contrast": None, "mimic": None, "mask_ratio": 0.75}
    built = {ds: build_distiller(student, teacher, {"afdcd": values}, dataset=ds).methods["afdcd"]
             for ds in ("pascal", "cityscapes", "camvid", "synthetic")}
    # OSVAI/Af-DCD: its VOC, Cityscapes and CamVid scripts; train_ocmgd.py's argparse defaults elsewhere
    assert {ds: (m.mimic, m.contrast) for ds, m in built.items()} == {
        "pascal": (1e-6, 0.005), "cityscapes": (2e-6, 0.005), "camvid": (8e-6, 0.01), "synthetic": (4e-5, 0.001)}
    assert {ds: m.pooled for ds, m in built.items()} == {"pascal": True, "cityscapes": True, "camvid": False,
                                                          "synthetic": True}  # ocmgd.py: camvid not max-pooled
    camvid = built["camvid"].eval()  # eval: no mask, so the term can be recomputed
    s, t = Features(torch.randn(2, 3, 64, 64), {"backbone": torch.randn(2, 320, 8, 8)}), \
        Features(torch.randn(2, 3, 64, 64), {"backbone": torch.randn(2, 512, 8, 8).relu()})
    with torch.no_grad():
        got = camvid(s, t)["afdcd/contrast"]
        unpooled = contrastive_loss(camvid.project(s.taps["backbone"]), t.taps["backbone"], pool=1)
    assert got.item() == pytest.approx(0.01 * unpooled.item(), rel=1e-5)
    given = build_distiller(student, teacher, {"afdcd": {**values, "mimic": 0.5, "contrast": 0}}, dataset="pascal")
    assert (given.methods["afdcd"].mimic, given.methods["afdcd"].contrast) == (0.5, 0)  # flags win
    method = build_distiller(student, teacher, {"afdcd": values}).methods["afdcd"].train()
    x = torch.randn(4, 320, 6, 6)
    aligned = method.align(x)
    zeroed = torch.stack([(method.project(x) - method.projector(aligned)).abs().sum() for _ in range(2)])
    assert (zeroed > 0).all()  # training masks the input of the projector, differently each step
    method.eval()
    torch.testing.assert_close(method.project(x), method.projector(aligned))  # no mask in eval
    for size in (3, 5):  # maps smaller than a pooled 4x4 patch still give a finite loss
        assert math.isfinite(contrastive_loss(torch.randn(1, 16, size, size), torch.randn(1, 16, size, size), 4))
    facts = RunFacts(crop_size=64, batch_size=4)
    assert AfDCD.check(values, facts) is None
    assert "--afdcd_mask_ratio 1.0: give a share in [0, 1)" in AfDCD.check({**values, "mask_ratio": 1.0}, facts)
    assert "would contribute nothing" in AfDCD.check({**values, "kd": 0, "contrast": 0, "mimic": 0}, facts)


def test_cirkd_enqueues_the_class_pixels_or_with_authors_the_authors_image_positions():
    """CIRKD's code (losses/cirkd_memory.py) enqueues this_feat[:, perm[:K]]: image positions 0..n-1, n the class's
    pixel count, whatever their class; ``--cirkd-enqueue authors`` reproduces it, the default draws among the class's
    own pixels.  Each position's feature encodes the position."""
    feats = torch.zeros(1, 4, 16, 16)
    feats[0, 0] = torch.arange(256.0).view(16, 16) + 1
    feats[0, 1] = 1.0
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels.view(-1)[100:116] = 1  # class 1: positions 100..115
    enqueued = {}
    for mode in ("class", "authors"):
        memory = ClassMemory(2, 4, 32, 4, seed=0, enqueue=mode)
        memory.enqueue(feats, labels)
        queue = memory.pixel[1, :16]
        enqueued[mode] = sorted((torch.round(queue[:, 0] / queue[:, 1]) - 1).int().tolist())
    assert enqueued == {"class": list(range(100, 116)), "authors": list(range(16))}


def test_cirkd_values_are_checked_against_what_they_mean():
    """A pool that leaves a 1 x 1 map (the mini-batch term exactly 0), queues shorter than one step's entries
    (a crash in the first step), queues that cannot fit in memory, all terms at 0: refused before the run."""
    values = {h.name: h.value for h in CIRKD.hyper}
    facts = RunFacts(crop_size=64, batch_size=4, num_classes=7, memory=8 * 2 ** 30)
    assert CIRKD.check(values, facts) is None
    assert "decoder tap is 16 x 16" in CIRKD.check({**values, "pool": 16}, facts)
    assert CIRKD.check({**values, "pool": 15}, facts) is None  # 2 x 2 after pooling
    assert CIRKD.check({**values, "pool": 16, "minibatch": 0}, facts) is None  # the term it would zero is off
    assert "give at least 64" in CIRKD.check({**values, "pixel_memory": 63}, facts)
    assert "give at least 4" in CIRKD.check({**values, "region_memory": 3}, facts)
    assert "GiB" in CIRKD.check({**values, "pixel_memory": 10 ** 7}, facts)
    assert "contribute nothing" in CIRKD.check({**values, "kd": 0, "minibatch": 0, "memory_pixel": 0,
                                                "memory_region": 0}, facts)


# ---- LAD ----------------------------------------------------------------------------------------------------

def test_lad_label_encodings_by_hand():
    images = torch.zeros(2, 3, 2, 3)
    labels = torch.tensor([[[0, 1, 2], [255, 2, 0]], [[1, 1, 1], [0, 0, 2]]])
    fixed = label_input(images, labels, num_classes=3, noise=0.0)
    assert fixed.shape == (2, 4, 2, 3) and torch.equal(fixed[:, :3], images)
    ids = torch.tensor([[[0, 1, 2], [3, 2, 0]], [[1, 1, 1], [0, 0, 2]]])  # the ignore label is id C
    torch.testing.assert_close(fixed[:, 3], SCALE * (ids - 2).float() / 10)
    torch.manual_seed(0)
    rand = random_label_input(images, labels, num_classes=3, noise=0.0)[:, 3]
    for b in range(2):
        for c in range(4):
            values = rand[b][ids[b] == c]
            assert values.numel() == 0 or torch.all(values == values[0])  # one value per class and image
    assert rand[0][ids[0] == 1][0] != rand[1][ids[1] == 1][0]  # drawn anew for each image
    noisy = label_input(images, labels, 3)[:, 3] / SCALE - (ids - 2).float() / 10
    assert 0.005 < noisy.std().item() < 0.05


def test_lad_teacher_trains_on_two_noised_paths_and_the_student_needs_such_a_teacher():
    torch.manual_seed(0)
    model = DeepLab(3, "resnet18", label_channel=True)
    wrapper = LabelAssistedTeacher(model, SegmentationLosses().build_loss("ce")).train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    logits, terms = wrapper(x, labels=y)
    assert set(terms) == {"lad/ce_path2", "lad/consistency"} and terms["lad/consistency"].item() > 0
    sum(terms.values()).backward()
    assert model.backbone.conv1.weight.grad[:, 3].abs().sum() > 0  # the label channel learns
    assert wrapper.validation_input(x, y).shape == (2, 4, 32, 32)
    plain = DeepLab(3, "resnet18")
    with pytest.raises(ValueError, match="--label-assisted"):
        build_distiller(DeepLab(3, "mobilenet"), plain, {"lad": {"weight": 3.0, "temperature": 4.0}})
    d = build_distiller(DeepLab(3, "mobilenet"), model, {"lad": {"weight": 3.0, "temperature": 4.0}})
    with pytest.raises(ValueError, match="needs the labels"):
        d(x)


def test_afdcd_uses_c4_after_its_relu_and_its_modules_gradients_are_clipped_to_15():
    """train_ocmgd.py clips the gradient norm of Af-DCD's own modules to 15 before each step; the student's are
    left alone."""
    from training.loop import train_step
    from utils.device import Precision

    torch.manual_seed(0)
    teacher, student = DeepLab(3, "resnet18"), DeepLab(3, "resnet18")
    values = {"weight": 1.0, "kd": 1.0, "contrast": 50.0, "mimic": 1.0, "mask_ratio": 0.75}
    d = build_distiller(student, teacher, {"afdcd": values}).train()
    method = d.methods["afdcd"]
    assert d.clip_groups() == [(list(method.parameters()), 15.0)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        taps = teacher.forward_features(x).taps["backbone"]
    assert (taps < 0).any()  # the tap is pre-ReLU; Af-DCD reads relu(tap), c4 as ResNet's layer4 returns it
    opt = torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=0.0)
    train_step(d, SegmentationLosses().build_loss("ce"), opt, Precision(torch.device("cpu")), x,
               torch.randint(0, 3, (2, 64, 64)))
    own = torch.nn.utils.get_total_norm([p.grad for p in method.parameters()])
    rest = torch.nn.utils.get_total_norm([p.grad for p in student.parameters() if p.grad is not None])
    assert own.item() == pytest.approx(15.0, rel=1e-4) and rest.item() > 15.0  # clipped; the student's not
