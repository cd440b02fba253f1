"""Every comparison method pinned to its authors' own code: on fixed small inputs (with the same module weights and
random draws on both sides), values computed once by running the authors' original loss code, stored with the
inputs in tests/reference/authors/<method>.pt (``source``: repository@commit, file, function; ``notes``: what was
edited to run it on a CPU, e.g. ``.cuda()`` removed).  Where this codebase differs on purpose (the division by the
batch size of terms from mean-CE codebases, ``Method.divide_by_batch``; the label channel's scale), the test
applies the difference explicitly, quoting the authors' line.  AttnFD's own reference is pinned in
test_distillation.py and test_models.py.

    KD       winycg/CIRKD losses/kd.py CriterionKD (= hunto/DIST_KD segmentation CriterionKD)
    CWD      irfanICMLL/TorchDistiller SemSeg-distill/utils/criterion.py CriterionCWD (= winycg/CIRKD's)
    DIST     hunto/DIST_KD segmentation/losses/dist_kd.py DIST (T != 1: its classification DIST on pixel rows)
    AT       szagoruyko/attention-transfer utils.py at_loss, as cifar.py / imagenet.py add it (beta x sum)
    Overhaul clovaai/overhaul-distillation Segmentation/distiller.py (margins, connectors, dividers, / batch)
    SKD      irfanICMLL/structure_knowledge_distillation utils/criterion.py (pixel-wise, pairwise)
    CIRKD    winycg/CIRKD @ 2d8ad0f losses/cirkd_mini_batch.py, cirkd_memory.py (two steps, queues wrapping)
    LAD      skyshoumeng/Label_Assisted_Distillation train_baseline.py (label channel, consistency, CWD)
    Af-DCD   OSVAI/Af-DCD losses/ocmgd.py, losses/kd.py (mimic, omni-contrastive, KD; VOC and CamVid branches)
"""
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from distillation import (
    AT,
    CIRKD,
    CWD,
    DIST,
    KD,
    SKD,
    ClassMemory,
    Overhaul,
    cwd_loss,
    dist_loss,
    kd_loss,
    memory_contrast_loss,
    minibatch_loss,
)
from distillation.afdcd import AfDCD, contrastive_loss, mimic_loss
from distillation.at import at_loss
from distillation.attnfd import build_connector
from distillation.cirkd import projector
from distillation.labels import SCALE, label_input, random_label_input
from distillation.lad import LAD, LabelAssistedTeacher
from distillation.overhaul import DIVIDERS, margin_from_bn, overhaul_loss, overhaul_partial_l2
from distillation.skd import skd_pairwise_loss, skd_pixelwise_loss

AUTHORS = Path(__file__).parent / "reference" / "authors"


# ---- kd ------------------------------------------------------------------------------------------------------------

def test_kd_matches_cirkd_criterion_kd():
    ref = torch.load(AUTHORS / "kd.pt", weights_only=True)
    s, t = ref["inputs"]["s_logits"], ref["inputs"]["t_logits"]
    n = s.shape[0]
    for temperature in ref["inputs"]["temperatures"]:
        theirs = ref["values"][f"kd_T{temperature:g}"]
        # the loss itself: CriterionKD(temperature)(pred, soft), no convention difference
        torch.testing.assert_close(kd_loss(s, t, temperature), theirs, rtol=1e-5, atol=1e-7)
        # the term the Distiller adds: CIRKD train_kd.py adds
        #   "kd_loss = self.args.lambda_kd * self.criterion_kd(s_outputs[0], t_outputs[0])"
        # next to a plain-mean CE; this codebase's CE is divided by the batch size (batch_average), so the
        # Distiller divides KD's term by the global batch too (Method.divide_by_batch) to keep the ratio to the CE.
        assert KD.divide_by_batch
        weight = 1.0  # CIRKD --lambda-kd 1
        term = KD(None, None, weight=weight, temperature=temperature)(
            SimpleNamespace(logits=s), SimpleNamespace(logits=t))["kd"] / n
        torch.testing.assert_close(term, weight * theirs / n, rtol=1e-5, atol=1e-7)


# ---- cwd -----------------------------------------------------------------------------------------------------------

def test_cwd_matches_torchdistiller_criterion_cwd():
    ref = torch.load(AUTHORS / "cwd.pt", weights_only=True)
    s, t = ref["inputs"]["s_logits"], ref["inputs"]["t_logits"]
    n = s.shape[0]
    for temperature in ref["inputs"]["temperatures"]:
        theirs = ref["values"][f"cwd_T{temperature:g}"]
        # the loss itself: KLDivLoss(sum)(softmax(s/T).log(), softmax(t/T)) / (n * c) * T^2, no convention difference
        # (the authors take log of the softmax, we take log_softmax: equal to fp32 rounding on these inputs)
        torch.testing.assert_close(cwd_loss(s, t, temperature), theirs, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(cwd_loss(s, t, temperature), ref["cirkd_values"][f"cwd_T{temperature:g}"],
                                   rtol=1e-5, atol=1e-7)
        # the term the Distiller adds: the authors add "temp = args.lambda_cwd*self.criterion_cwd(self.preds_S[0],
        # self.preds_T[0])" (CIRKD: lambda_cwd_logit 3) next to a plain-mean CE; this codebase's CE is divided by the
        # batch size, so the Distiller divides CWD's term by the global batch too (Method.divide_by_batch).
        assert CWD.divide_by_batch
        weight = 3.0  # the paper's / CIRKD's --lambda-cwd-logit 3
        term = CWD(None, None, weight=weight, temperature=temperature)(
            SimpleNamespace(logits=s), SimpleNamespace(logits=t))["cwd"] / n
        torch.testing.assert_close(term, weight * theirs / n, rtol=1e-5, atol=1e-7)


# ---- dist ----------------------------------------------------------------------------------------------------------

def test_dist_matches_dist_kd_segmentation_dist():
    ref = torch.load(AUTHORS / "dist.pt", weights_only=True)
    s, t = ref["inputs"]["s_logits"], ref["inputs"]["t_logits"]
    values = ref["values"]
    n = s.shape[0]
    # each term alone (authors' inter_class_relation / intra_class_relation on the softmaxed pixel rows)
    torch.testing.assert_close(dist_loss(s, t, 1.0, 0.0, 1.0), values["inter"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(dist_loss(s, t, 0.0, 1.0, 1.0), values["intra"], rtol=1e-5, atol=1e-7)
    for beta, gamma, temperature in ((1.0, 1.0, 1.0), (2.0, 0.5, 1.0), (1.0, 1.0, 2.0), (2.0, 0.5, 4.0)):
        theirs = values[f"dist_b{beta:g}_g{gamma:g}_T{temperature:g}"]
        # no convention difference: T 1 is the segmentation DIST(beta, gamma); T != 1 the classification
        # DIST(beta, gamma, tau) "inter_loss = self.tau**2 * inter_class_relation(y_s, y_t)" (same for intra)
        torch.testing.assert_close(dist_loss(s, t, beta, gamma, temperature), theirs, rtol=1e-5, atol=1e-7)
        # the term the Distiller adds: DIST_KD segmentation/train_kd.py adds
        #   "kd_loss = self.args.lambda_kd * self.criterion_kd(s_outputs[0], t_outputs[0])"
        # next to a plain-mean CE; this codebase's CE is divided by the batch size, so the Distiller divides DIST's
        # term by the global batch too (Method.divide_by_batch).
        assert DIST.divide_by_batch
        weight = 1.0  # DIST_KD --lambda-kd 1
        term = DIST(None, None, weight=weight, beta=beta, gamma=gamma, temperature=temperature)(
            SimpleNamespace(logits=s), SimpleNamespace(logits=t))["dist"] / n
        torch.testing.assert_close(term, weight * theirs / n, rtol=1e-5, atol=1e-7)


# ---- at ------------------------------------------------------------------------------------------------------------

def _at_models(relu):
    return [SimpleNamespace(backbone=SimpleNamespace(stage_relu=relu)) for _ in range(2)]


def test_at_matches_attention_transfer():
    ref = torch.load(AUTHORS / "at.pt", weights_only=True)
    g_s, g_t, beta = ref["inputs"]["g_s"], ref["inputs"]["g_t"], ref["inputs"]["beta"]
    v = ref["values"]
    n = g_s[0].shape[0]
    # the distance per stage: utils.at_loss(x, y) = (at(x) - at(y)).pow(2).mean(), no convention difference
    for i, (s, t) in enumerate(zip(g_s, g_t)):
        torch.testing.assert_close(at_loss(s, t), v[f"at_stage{i}_raw"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(at_loss(F.relu(s), F.relu(t)), v[f"at_stage{i}_relu"], rtol=1e-5, atol=1e-7)
    # the term: cifar.py/imagenet.py "+ opt.beta * sum(loss_groups)" (ngpu 1) = --at-formula code;
    # --at-formula paper is the paper's beta/2 on the same sum.  stage_relu=True applies F.relu to the stages first
    # (imagenet.py's ResNet group outputs end in F.relu); stage_relu=False passes them as they are (cifar.py's WRN).
    # The authors add the term next to a plain-mean CE; this codebase's CE is divided by the batch size
    # (batch_average), so the Distiller divides AT's term by the global batch (Method.divide_by_batch): the factor 1/n.
    assert AT.divide_by_batch
    for relu, tag in ((False, "raw"), (True, "relu")):
        student, teacher = _at_models(relu)
        for formula in ("code", "paper"):
            term = AT(student, teacher, weight=beta, formula=formula)(
                SimpleNamespace(stages=g_s), SimpleNamespace(stages=g_t))["at"] / n
            torch.testing.assert_close(term, v[f"{formula}_{tag}"] / n, rtol=1e-5, atol=1e-7)
    # README's imagenet.py command runs --ngpu 2: loss_groups = [v.sum() ...] adds the two replicas' means, twice the
    # single-process term; this codebase's "code" form is the ngpu-1 term (every rank holds the global-batch mean).
    torch.testing.assert_close(v["code_raw_ngpu2"], 2 * v["code_raw"], rtol=1e-5, atol=1e-7)


# ---- overhaul ------------------------------------------------------------------------------------------------------

def _overhaul_bn(p):
    bn = nn.BatchNorm2d(p["weight"].numel())
    with torch.no_grad():
        bn.weight.copy_(p["weight"])
        bn.bias.copy_(p["bias"])
    return bn


def test_overhaul_matches_overhaul_distillation():
    ref = torch.load(AUTHORS / "overhaul.pt", weights_only=True)
    inp, v = ref["inputs"], ref["values"]
    s_feats, t_feats = inp["s_feats"], inp["t_feats"]
    bns = [_overhaul_bn(p) for p in inp["teacher_bn"]]
    s_ch, t_ch = [s.shape[1] for s in s_feats], [t.shape[1] for t in t_feats]
    n = s_feats[0].shape[0]
    assert DIVIDERS == (8, 4, 2, 1, 1, 16)  # Distiller: self.loss_divider = [8, 4, 2, 1, 1, 4*4]

    # margins: get_margin_from_BN(bn), registered as margin.unsqueeze(1).unsqueeze(2).unsqueeze(0)
    margins = [margin_from_bn(bn) for bn in bns]
    for i, m in enumerate(margins):
        torch.testing.assert_close(m, v[f"margin{i}"], rtol=1e-5, atol=1e-7)
    # connectors: build_feature_connector(t, s) with the authors' initialised weights, BN in train mode
    connectors = [build_connector(s, t) for s, t in zip(s_ch, t_ch)]
    sources = []
    for i, (c, sd) in enumerate(zip(connectors, inp["connectors"])):
        c.load_state_dict(sd)
        with torch.no_grad():
            sources.append(c(s_feats[i]))
        torch.testing.assert_close(sources[i], v[f"source{i}"], rtol=1e-5, atol=1e-7)
    # the partial L2 per feature: distillation_loss(source, target, margin), no convention difference
    for i in range(6):
        torch.testing.assert_close(overhaul_partial_l2(v[f"source{i}"], t_feats[i], v[f"margin{i}"]),
                                   v[f"partial{i}"], rtol=1e-5, atol=1e-7)
    # the sum over features: Distiller.forward's loss_distill (sum of partial / divider); overhaul_loss also
    # divides by the batch: train_with_distillation.py "loss_distill.sum() / batch_size * 1e-5"
    sources_ref = [v[f"source{i}"] for i in range(6)]
    torch.testing.assert_close(overhaul_loss(sources_ref, t_feats, margins), v["loss_distill"] / n,
                               rtol=1e-5, atol=1e-7)
    # the whole term (connectors + margins + loss + weight); the authors' CE (SegmentationLosses, batch_average)
    # is the same as this codebase's, so no further division: Overhaul.divide_by_batch is False.
    assert not Overhaul.divide_by_batch
    student = SimpleNamespace(pre_relu_channels=s_ch)
    teacher = SimpleNamespace(pre_relu_channels=t_ch, bns_before_relu=lambda: bns)
    method = Overhaul(student, teacher, weight=inp["weight"])
    for c, sd in zip(method.connectors, inp["connectors"]):
        c.load_state_dict(sd)
    with torch.no_grad():
        term = method(SimpleNamespace(stages=s_feats[:4], heads=s_feats[4:]),
                      SimpleNamespace(stages=t_feats[:4], heads=t_feats[4:]))["overhaul"]
    torch.testing.assert_close(term, v["term"], rtol=1e-5, atol=1e-7)


# ---- skd -----------------------------------------------------------------------------------------------------------

def test_skd_matches_authors_code():
    ref = torch.load(AUTHORS / "skd.pt", weights_only=True)
    inp, val = ref["inputs"], ref["values"]
    close = dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(skd_pixelwise_loss(inp["s_logits"], inp["t_logits"]), val["pixelwise"], **close)
    for scale in inp["scales"]:
        torch.testing.assert_close(skd_pairwise_loss(inp["s_feat"], inp["t_feat"], scale),
                                   val[f"pairwise_{scale:g}"], **close)
        torch.testing.assert_close(skd_pairwise_loss(inp["s_feat6"], inp["t_feat"], scale),
                                   val[f"pairwise_s6_{scale:g}"], **close)

    # the method's defaults are the run script's (run_train_val.sh: lambda_pi=10.0, --lambda-pa 0.5,
    # --pool-scale 0.5; its holistic term, lambda_d=0.1, is not implemented here)
    method = SKD(None, None, weight=1.0)
    assert (method.pixelwise, method.pairwise, method.pool_scale) == (10.0, 0.5, 0.5)
    terms = method(SimpleNamespace(logits=inp["s_logits"], taps={"decoder": inp["s_feat"]}),
                   SimpleNamespace(logits=inp["t_logits"], taps={"decoder": inp["t_feat"]}))
    torch.testing.assert_close(terms["skd/pixelwise"], 10.0 * val["pixelwise"], **close)
    torch.testing.assert_close(terms["skd/pairwise"], 0.5 * val["pairwise_0.5"], **close)
    # Convention: kd_model.py adds "G_loss + args.lambda_pi*self.criterion_pixel_wise(...)" and
    # "G_loss + args.lambda_pa*temp1" to CriterionDSN's plain-mean CE; this codebase's CE is also divided by the
    # batch (batch_average), so the Distiller divides SKD's terms by the global batch (Method.divide_by_batch):
    # the term it adds is weight * theirs / n.
    assert SKD.divide_by_batch


# ---- cirkd ---------------------------------------------------------------------------------------------------------

def _cirkd_close(ours, theirs):
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def _cirkd_memory(inp, enqueue="authors"):
    memory = ClassMemory(inp["num_classes"], inp["pixel_queue0"].shape[2], inp["pixel_size"], inp["region_size"],
                         seed=0, enqueue=enqueue)
    # the authors' initial queues (N(0, 1), L2-normalised) plus this project's spare slot per class
    memory.slots = [torch.cat([q.clone(), q.new_zeros(q.shape[0], 1, q.shape[2])], 1)
                    for q in (inp["pixel_queue0"], inp["region_queue0"])]
    return memory


def _cirkd_feeding(memory, perms):
    """memory.randperm returns the authors' recorded queue perms, in their order (pixel queue, then region)."""
    queue = list(perms)

    def randperm(n, device):
        perm = queue.pop(0)
        assert perm.numel() == n
        return perm.to(device)
    memory.randperm = randperm
    return queue


def test_cirkd_matches_authors_code():
    ref = torch.load(AUTHORS / "cirkd.pt", weights_only=True)
    inp, val = ref["inputs"], ref["values"]
    T = inp["temperature"]

    # ---- mini-batch pixel-to-pixel: CriterionMiniBatchCrossImagePair(temperature=0.1)(feat_S, feat_T)
    for step, st in enumerate(inp["steps"]):
        _cirkd_close(minibatch_loss(st["s_feat"], st["t_feat"], T), val[f"minibatch_step{step}"])
    _cirkd_close(minibatch_loss(inp["s_feat6"], inp["steps"][0]["t_feat"], T), val["minibatch_s6"])

    # ---- the enqueue (ClassMemory(enqueue="authors"), picks = the authors' randperm(n)[:K] per image and class)
    # and the memory terms from this project's functions, composed as CIRKD.forward composes them
    memory = _cirkd_memory(inp)
    proj = projector(inp["steps"][0]["s_feat"].shape[1])
    proj.load_state_dict({**proj.state_dict(), **inp["projector"]})
    proj.train()
    for step, (st, draws) in enumerate(zip(inp["steps"], inp["draws"])):
        # the project's draw in "authors" mode picks among image positions 0..n-1, as perm[:K] of randperm(n)
        labels = st["labels"].flatten(1)
        classes = labels[:, None] == torch.arange(inp["num_classes"])[None, :, None]
        counts = classes.sum(2)
        drawn = memory.draw(classes, counts)
        k = counts.clamp(max=16)
        assert bool(((drawn < counts[..., None]) | (torch.arange(16) >= k[..., None])).all())
        t = F.normalize(st["t_feat"], dim=1)
        memory.enqueue(t, st["labels"], picks=draws["picks"])
        _cirkd_close(memory.pixel, val[f"pixel_queue_step{step}"])
        _cirkd_close(memory.region, val[f"region_queue_step{step}"])
        assert memory.pixel_ptr.tolist() == val[f"pixel_ptr_step{step}"].tolist()
        assert memory.region_ptr.tolist() == val[f"region_ptr_step{step}"].tolist()

        s = F.normalize(proj(st["s_feat"]), dim=1)
        valid = (st["labels"] != 255).flatten().float()
        s_anchors, t_anchors = (x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in (s, t))
        _cirkd_feeding(memory, [draws["pixel_perm"], draws["region_perm"]])
        for name, queue, per_class in (("pixel", memory.pixel, inp["pixel_contrast"]),
                                       ("region", memory.region, inp["region_contrast"])):
            keys = memory.keys(queue, per_class)
            # their contrast_sim_kd: F.kl_div(..., reduction='batchmean') over the valid anchors
            ours = memory_contrast_loss(s_anchors, t_anchors, keys, T, inp["kd_temperature"], valid=valid) / valid.sum()
            _cirkd_close(ours, val[f"memory_{name}_step{step}"])

    # ---- the same through CIRKD.forward (pool 1: the features are already at the labels' size; weights 1)
    D, C = inp["steps"][0]["s_feat"].shape[1], inp["num_classes"]
    net = SimpleNamespace(tap_channels={"decoder": D}, num_classes=C)
    method = CIRKD(net, net, weight=1.0, kd=1.0, minibatch=1.0, memory_pixel=1.0, memory_region=1.0, temperature=T,
                   pool=1, pixel_memory=inp["pixel_size"], region_memory=inp["region_size"], enqueue="authors")
    method.memory = _cirkd_memory(inp)
    method.projector.load_state_dict({**method.projector.state_dict(), **inp["projector"]})
    method.train()
    method.PIXEL_CONTRAST = (inp["pixel_contrast"] - 1) * C   # -> // C + 1 == pixel_contrast
    method.REGION_CONTRAST = (inp["region_contrast"] - 1) * C
    for step, (st, draws) in enumerate(zip(inp["steps"], inp["draws"])):
        method.memory.draw = lambda classes, counts, picks=draws["picks"]: picks
        _cirkd_feeding(method.memory, [draws["pixel_perm"], draws["region_perm"]])
        logits = torch.zeros(st["labels"].shape[0], C, *st["labels"].shape[1:])
        terms = method(SimpleNamespace(taps={"decoder": st["s_feat"]}, logits=logits),
                       SimpleNamespace(taps={"decoder": st["t_feat"]}, logits=logits), labels=st["labels"])
        _cirkd_close(terms["cirkd/minibatch"], val[f"minibatch_step{step}"])
        _cirkd_close(terms["cirkd/memory_pixel"], val[f"memory_pixel_step{step}"])
        _cirkd_close(terms["cirkd/memory_region"], val[f"memory_region_step{step}"])
        _cirkd_close(method.memory.pixel, val[f"pixel_queue_step{step}"])
        _cirkd_close(method.memory.region, val[f"region_queue_step{step}"])
    # Convention: train_cirkd.py adds "kd_loss + minibatch_pixel_contrast_loss + memory_pixel_contrast_loss +
    # memory_region_contrast_loss" (weights 1, 1, 0.1, 0.1) to a plain-mean CE; this codebase's CE is also divided
    # by the batch size (batch_average), so the Distiller divides CIRKD's terms by the global batch
    # (Method.divide_by_batch) to keep the authors' ratio to the CE.
    assert CIRKD.divide_by_batch


# ---- lad -----------------------------------------------------------------------------------------------------------

def test_lad_matches_the_authors_code(monkeypatch):
    ref = torch.load(AUTHORS / "lad.pt", weights_only=True)
    x, v = ref["inputs"], ref["values"]
    images, c = x["images"], x["num_classes"]
    labels = torch.where(x["labels"] == x["ignore_label"], 255, x["labels"])  # the project's ignore label is 255
    n, h, w = labels.shape

    def close(ours, theirs, **tol):
        torch.testing.assert_close(ours, theirs, **({"rtol": 1e-5, "atol": 1e-7} | tol))

    # The label channel: the authors multiply it by 100 (`img1 = torch.cat([images_T, lb_m.float()*100.0], dim=1)`),
    # the project by SCALE (distillation/labels.py: the same ratio to its standardised images), so compare the
    # channels divided by their scales (values of about +-1: absolute tolerance at float32 rounding).
    noise = iter([x["fixed_noise"].view(n, h, w)])
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: next(noise))
    fixed = label_input(images, labels, c)
    close(fixed[:, :3], images)
    close(fixed[:, 3] / SCALE, v["label_channel_fixed"] / 100, atol=1e-6)
    assert not v["student_label_channel"].any()  # the authors' student sees a zero label channel: our plain student

    # The random encoding: the authors draw torch.randn(1) per (image, id) then the noise; replay both draws.
    codes = iter(x["random_codes"])
    noises = iter(t.view(n, h, w) for t in x["random_noise"])
    monkeypatch.setattr(torch, "randn", lambda *size, **kw: next(codes))
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: next(noises))
    for path in ("label_channel_path1", "label_channel_path2"):
        close(random_label_input(images, labels, c)[:, 3] / SCALE, v[path] / 100, atol=1e-6)

    # The teacher's consistency, through LabelAssistedTeacher with a stand-in 1x1-conv model; the model rescales the
    # label channel from SCALE to the authors' 100 so both see the same input.
    class Stand(nn.Module):
        num_classes = c

        def forward(self, inp):
            inp = torch.cat([inp[:, :3], inp[:, 3:] * (100 / SCALE)], 1)
            return F.conv2d(inp, x["conv_w"], x["conv_b"])

    codes = iter(x["random_codes"])
    noises = iter(t.view(n, h, w) for t in x["random_noise"])
    first, terms = LabelAssistedTeacher(Stand(), lambda out, lab: out.sum() * 0)(images, labels)
    close(first, v["path1_logits"])
    # authors: `losses = losses + cons_loss * 5.`, next to a mean CE; the project divides by the batch size
    # (distillation/lad.py: "The consistency term is divided by the batch size like the other terms").
    close(terms["lad/consistency"] * n, v["teacher_consistency"])

    # The student's term: authors `losses = losses * 1. + cons_loss * 3.`, cons_loss = self.cwd(stu, tea) (T 4).
    monkeypatch.undo()
    lad = LAD(SimpleNamespace(), SimpleNamespace(label_channel=True), weight=3.0, temperature=4.0)
    ours = lad(SimpleNamespace(logits=x["s_logits"]), SimpleNamespace(logits=x["t_logits"]))["lad"]
    close(ours, v["student_term"])
    close(3.0 * cwd_loss(x["s_logits"], x["t_logits"], 4.0), v["student_term"])
    # the Distiller then divides it by the batch size (Method.divide_by_batch), as the project's CE is a mean / B
    assert LAD.divide_by_batch


# ---- afdcd ---------------------------------------------------------------------------------------------------------

def test_afdcd_matches_the_authors_code(monkeypatch):
    ref = torch.load(AUTHORS / "afdcd.pt", weights_only=True)
    x, v = ref["inputs"], ref["values"]

    def unpack(p):  # 4-bit levels, two per byte along W
        return torch.stack([p // 16, p % 16], -1).flatten(-2).float() / x["feat_scale"]

    def close(ours, theirs, **tol):
        torch.testing.assert_close(ours, theirs, **({"rtol": 1e-5, "atol": 1e-7} | tol))

    feat_s, feat_t = unpack(x["feat_s_q"]), unpack(x["feat_t_q"])
    s_ch, t_ch = feat_s.shape[1], feat_t.shape[1]
    def net(c):
        return SimpleNamespace(tap_channels={"backbone": c}, backbone=SimpleNamespace(stage_relu=True))

    method = AfDCD.build(net(s_ch), net(t_ch), {"weight": 1.0, "kd": 1.0, "contrast": None, "mimic": None,
                                                "mask_ratio": 0.75}, dataset="pascal")
    # the authors' criterion's weights: align.* (1x1 conv) and projetor.0 / .2 (3x3 convs), the same layout
    state = {k.replace("projetor", "projector"): w.float() for k, w in x["weights"].items()}
    method.load_state_dict(state)
    method.train()

    # The mask: the authors keep a position where its draw u <= 1 - 0.75 (`mat = torch.where(mat > 1-self.zeta_fd,
    # 0, 1)`), the project where its draw > mask_ratio: the same share, the other end of the draw.  Feed the
    # authors' mask as the project's draw (1.0 > 0.75 keeps, 0.0 drops).
    assert torch.equal(x["keep"], x["rand"].float() <= 0.25)
    monkeypatch.setattr(torch, "rand", lambda *size, **kw: x["keep"].float())
    with torch.no_grad():
        projected = method.project(feat_s)

        close(mimic_loss(projected, feat_t), v["mimic"])                        # MSE(sum) / BS
        close(contrastive_loss(projected, feat_t, pool=x["pool"]), v["contrast"])
        close(kd_loss(x["s_logits"], x["t_logits"]), v["kd"])                   # CriterionKD(T=1), batchmean
        # the authors' camvid branch does not pool (preds[:, :, :44, :44]): pool 1 here
        close(contrastive_loss(projected, feat_t, pool=1), v["contrast_camvid_branch"])

        # The whole forward at VOC's weights (train_scripts/voc/deeplabv3_res18.sh: --lambda-fd 0.000001
        # --lambda-ctr 0.005, --lambda-kd default 1.).  The project's logits are at input resolution and its pool is
        # round(32 x (map size) / (logit size)): the authors' 8x8 stride-8 logits upsampled by nearest neighbour (the
        # same pixel mean for KD) to the input size of a stride-8 32x32 map, 256, make it pool by 4 as the authors'.
        assert (method.mimic, method.contrast, method.kd) == (1e-6, 0.005, 1.0)
        def up(t):
            return F.interpolate(t, scale_factor=(feat_t.shape[2] * 8) // t.shape[2], mode="nearest")

        terms = method(SimpleNamespace(taps={"backbone": feat_s}, logits=up(x["s_logits"])),
                       SimpleNamespace(taps={"backbone": feat_t}, logits=up(x["t_logits"])))
    close(terms["afdcd/kd"], v["voc_kd"])
    close(terms["afdcd/mimic"], v["voc_mimic"])
    close(terms["afdcd/contrast"], v["voc_contrast"])
    # the Distiller then divides every term by the batch size (Method.divide_by_batch), as the project's CE is a
    # mean / B and the authors' (`losses = task_loss + kd_loss + fd_loss + ctr_loss`) a plain mean
    assert AfDCD.divide_by_batch
