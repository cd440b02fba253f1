"""CIRKD (Yang et al., CVPR 2022, "Cross-Image Relational Knowledge Distillation for Semantic Segmentation";
winycg/CIRKD at its CVPR version, commit 2d8ad0f: ``losses/cirkd_mini_batch.py``, ``losses/cirkd_memory.py``,
``train_cirkd.py`` and ``train_scripts/train_cirkd/``).

On the feature before the classifier (here the decoder tap, 256 channels, average-pooled 2 x 2 to stride 8,
the resolution of CIRKD's DeepLabV3 head), L2-normalised over channels:

* mini-batch pixel-to-pixel: for every pair (i, j) of images of the batch the HW x HW similarities of image i's
  pixels to image j's, a softmax over j's pixels at T 0.1, KL(teacher || student) averaged over i's pixels
  (``batchmean``), averaged over the B^2 pairs;
* memory pixel-to-pixel and pixel-to-region: per-class queues of teacher pixel embeddings (20,000 per class,
  16 random pixels per class and image enqueued) and of teacher class means per image (2,000 per class), filled
  before the loss with the teacher features of the step; every valid pixel is an anchor, contrasted with
  4096 // C + 1 pixel and 1024 // C + 1 region embeddings per class (the same random queue slots for every
  class), student anchors through a projector (1x1 conv, BN, ReLU, 1x1 conv), similarities at T 0.1, KL at
  T 1 averaged over the anchors;
* KD on the logits at T 1.

Weights (``train_cirkd.py`` and its scripts): KD 1, mini-batch 1, memory pixel and region 0.1 on Cityscapes
and 0.01 on Pascal VOC (the maintainer in the repository's issue #8: with Cityscapes' weights CIRKD loses to
its baseline on VOC); datasets CIRKD has no script for take its defaults (0.1).

Adapted: the features are DeepLabV3+'s decoder output (CIRKD: DeepLabV3's head); ignore-label pixels are never
enqueued or anchored; a class's 16 pixels are drawn among that class's pixels (``--cirkd-enqueue authors``: the
authors' code's draw, image positions 0..n-1 of any class, n the class's pixel count; its published numbers come
from it) and the pixel queue's pointer advances by the number enqueued. Under torch.distributed the mini-batch
pairs run over the global batch (student features gathered with their gradients; CIRKD pairs within each GPU) and
the queues are filled with the teacher features and labels of every rank, in rank order (as CIRKD's
``concat_all_gather``); the random draws come from the method's own generator, so the queues stay identical on all
ranks. Queues, pointers and that generator are the module's extra state: they are in the checkpoint, and a resumed
run goes on exactly.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.device import fp32
from utils.distributed import gather_batch, global_batch, sum_over_ranks

from .base import Hyper, Method, register_method
from .kd import kd_loss

IGNORE = 255
PIXELS_PER_CLASS = 16  # enqueued per class and image (CIRKD's pixel_update_freq)
QUEUE_DIM = 256  # the teacher's decoder tap channels: the queues' embedding size
WEIGHTS = {"pascal": 0.01}  # memory weights per dataset; others: 0.1 (Cityscapes, the code's default)


def _kl(s_logits, t_logits, dim):
    """sum of KL(softmax(t) || softmax(s)) along ``dim`` (fp32, autocast off)."""
    with torch.autocast(s_logits.device.type, enabled=False):
        s, t = fp32(s_logits), fp32(t_logits)
        return (F.softmax(t, dim) * (F.log_softmax(t, dim) - F.log_softmax(s, dim))).sum()


def minibatch_loss(s, t, temperature=0.1):
    """CIRKD's mini-batch pixel-to-pixel term of (B, C, H, W) features (channel counts may differ): the mean over
    the (global) batch's B^2 image pairs of the KL of the pair's HW x HW similarity rows, averaged over rows."""
    s, t = F.normalize(fp32(s), dim=1).flatten(2), F.normalize(fp32(t), dim=1).flatten(2)  # (B, C, HW)
    s_all, t_all = gather_batch(s), gather_batch(t)
    total = 0
    with torch.autocast(s.device.type, enabled=False):
        for i in range(s.shape[0]):  # (global B, HW, HW): image i's pixels against every image's
            s_sim = torch.einsum("cp,ncq->npq", s[i], s_all) / temperature
            t_sim = torch.einsum("cp,ncq->npq", t[i], t_all) / temperature
            total = total + _kl(s_sim, t_sim, 2) / s.shape[2]
    return sum_over_ranks(total) / global_batch(s) ** 2


def memory_contrast_loss(s_anchors, t_anchors, keys, temperature=0.1, kd_temperature=1.0):
    """KL at ``kd_temperature`` between the student's and the teacher's similarities (/ ``temperature``) of the
    anchors (A x D, L2-normalised) to ``keys`` (K x D), summed over the anchors (the caller divides)."""
    s_anchors, t_anchors = fp32(s_anchors), fp32(t_anchors)
    keys = keys.to(s_anchors.dtype)
    with torch.autocast(s_anchors.device.type, enabled=False):
        s_logits = s_anchors @ keys.T / temperature
        t_logits = t_anchors @ keys.T / temperature
        return kd_temperature ** 2 * _kl(s_logits / kd_temperature, t_logits / kd_temperature, 1)


class ClassMemory:
    """Per-class queues of teacher embeddings: ``pixel`` (C, P, D) and ``region`` (C, R, D), initialised with
    L2-normalised N(0, 1) vectors, with their write pointers; ``generator`` makes every random draw."""

    def __init__(self, num_classes, dim, pixel_size, region_size, seed, enqueue="class"):
        self.generator, self.enqueue_mode = torch.Generator().manual_seed(seed), enqueue
        self.pixel = F.normalize(torch.randn(num_classes, pixel_size, dim, generator=self.generator), dim=2)
        self.region = F.normalize(torch.randn(num_classes, region_size, dim, generator=self.generator), dim=2)
        self.pixel_ptr = [0] * num_classes
        self.region_ptr = [0] * num_classes

    def to(self, device):
        if self.pixel.device != device:
            self.pixel, self.region = self.pixel.to(device), self.region.to(device)
        return self

    def randperm(self, n, device):
        return torch.randperm(n, generator=self.generator).to(device)

    @torch.no_grad()
    def enqueue(self, feats, labels):
        """``feats`` (N, D, H, W) L2-normalised teacher embeddings and ``labels`` (N, H, W) of the global batch."""
        size = self.pixel.shape[1]
        for feat, label in zip(feats.flatten(2), labels.flatten(1)):
            for c in torch.unique(label).tolist():
                if c == IGNORE or not 0 <= c < self.pixel.shape[0]:
                    continue
                where = (label == c).nonzero().squeeze(1)
                self.region[c, self.region_ptr[c]] = F.normalize(feat[:, where].mean(1), dim=0)
                self.region_ptr[c] = (self.region_ptr[c] + 1) % self.region.shape[1]
                k = min(len(where), PIXELS_PER_CLASS)
                draw = self.randperm(len(where), feat.device)[:k]
                positions = draw if self.enqueue_mode == "authors" else where[draw]  # authors: image positions 0..n-1
                picked = F.normalize(feat[:, positions].T, dim=1)
                ptr = self.pixel_ptr[c]
                if ptr + k >= size:
                    self.pixel[c, -k:], self.pixel_ptr[c] = picked, 0
                else:
                    self.pixel[c, ptr:ptr + k], self.pixel_ptr[c] = picked, ptr + k

    def keys(self, queue, per_class):
        """``per_class`` random slots of ``queue``, the same for every class: (C x per_class, D)."""
        index = self.randperm(queue.shape[1], queue.device)[:per_class]
        return queue[:, index].reshape(-1, queue.shape[2])

    def state(self):
        return {"pixel": self.pixel.cpu(), "region": self.region.cpu(), "rng": self.generator.get_state(),
                "pixel_ptr": torch.tensor(self.pixel_ptr), "region_ptr": torch.tensor(self.region_ptr)}

    def load(self, state):
        if state["pixel"].shape != self.pixel.shape or state["region"].shape != self.region.shape:
            raise ValueError(f"the checkpoint's CIRKD queues are {tuple(state['pixel'].shape)} and "
                             f"{tuple(state['region'].shape)}, this run's {tuple(self.pixel.shape)} and "
                             f"{tuple(self.region.shape)}: resume with the same --cirkd_pixel_memory and "
                             f"--cirkd_region_memory")
        device = self.pixel.device
        self.pixel, self.region = state["pixel"].to(device), state["region"].to(device)
        self.generator.set_state(state["rng"])
        self.pixel_ptr, self.region_ptr = state["pixel_ptr"].tolist(), state["region_ptr"].tolist()


def projector(channels):
    """CIRKD's student projector: 1x1 conv, BN, ReLU, 1x1 conv (no biases)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 1, bias=False))


@register_method
class CIRKD(Method):
    name, title = "cirkd", "CIRKD"
    hyper = (Hyper("weight", "cirkd_lambda", 0.0, "CIRKD: scales all its terms (paper: 1); 0 = off", paper=1.0, low=0),
             Hyper("kd", "cirkd_kd", 1.0, "CIRKD KD term weight (paper: 1)", low=0, term=True),
             Hyper("minibatch", "cirkd_minibatch", 1.0, "CIRKD mini-batch pixel-to-pixel weight (paper: 1)", low=0,
                   term=True),
             Hyper("memory_pixel", "cirkd_memory_pixel", None, "CIRKD memory pixel-to-pixel weight (default: 0.01 on "
                   "pascal, 0.1 otherwise, as its scripts)", low=0, term=True),
             Hyper("memory_region", "cirkd_memory_region", None, "CIRKD memory pixel-to-region weight (default: 0.01 "
                   "on pascal, 0.1 otherwise)", low=0, term=True),
             Hyper("temperature", "cirkd_T", 0.1, "CIRKD similarity temperature (paper: 0.1)", low=0, low_open=True),
             Hyper("pool", "cirkd_pool", 2, "CIRKD average-pool of the decoder tap (2: stride 8, CIRKD's); the pooled "
                   "map must stay at least 2 x 2", low=1, kind=int),
             Hyper("pixel_memory", "cirkd_pixel_memory", 20000, "CIRKD pixel queue length per class (paper: 20000); at "
                   f"least the {PIXELS_PER_CLASS} pixels x global batch enqueued per step", low=1, kind=int),
             Hyper("region_memory", "cirkd_region_memory", 2000, "CIRKD region queue length per class (paper: 2000); "
                   "at least the global batch", low=1, kind=int),
             Hyper("enqueue", "cirkd-enqueue", "class", "CIRKD pixels enqueued for a class: 16 drawn among that "
                   "class's pixels (class), or the authors' code's draw, 16 image positions among the first n, n the "
                   "class's pixel count, whatever their class (authors: cirkd_memory.py's this_feat[:, perm[:K]])",
                   choices=("class", "authors")))
    needs_labels = True
    teacher_needs = frozenset({"logits"})
    PIXEL_CONTRAST, REGION_CONTRAST = 4096, 1024

    @classmethod
    def check(cls, values, facts):
        """Besides the generic check: a pooled decoder tap of at least 2 x 2 (at 1 x 1 the mini-batch term is
        exactly 0), queues that hold at least one step's entries, and queues that fit in memory."""
        problem = super().check(values, facts)
        if problem:
            return problem
        tap = -(-facts.crop_size // 4)  # the decoder tap: stride 4
        if values["minibatch"] != 0 and values["pool"] >= tap:  # ceil(tap / pool) < 2
            return (f"--cirkd_pool {values['pool']}: the decoder tap is {tap} x {tap} at --crop-size "
                    f"{facts.crop_size}; pooled to 1 x 1 the mini-batch term is always 0; use at most {tap - 1}")
        queues = (("--cirkd_pixel_memory", values["pixel_memory"], PIXELS_PER_CLASS * facts.batch_size),
                  ("--cirkd_region_memory", values["region_memory"], facts.batch_size))
        for flag, size, per_step in queues:
            if size < per_step:
                return (f"{flag} {size}: a step enqueues up to {per_step} entries per class (global batch "
                        f"{facts.batch_size}); give at least {per_step}")
        if facts.memory:
            need = (values["pixel_memory"] + values["region_memory"]) * (facts.num_classes or 2) * QUEUE_DIM * 4
            if need > facts.memory // 2:
                return (f"--cirkd_pixel_memory {values['pixel_memory']} / --cirkd_region_memory "
                        f"{values['region_memory']}: the queues need {need / 2 ** 30:.1f} GiB, over half of the "
                        f"{facts.memory / 2 ** 30:.1f} GiB this run's device has; use shorter queues")
        return None

    @classmethod
    def build(cls, student, teacher, values, missing_attention=(), dataset=None):
        default = WEIGHTS.get(dataset, 0.1)
        values = {k: default if k.startswith("memory_") and v is None else v for k, v in values.items()}
        return cls(student, teacher, **values)

    def __init__(self, student, teacher, **values):
        super().__init__(student, teacher, **values)
        for name in ("memory_pixel", "memory_region"):
            if getattr(self, name) is None:
                setattr(self, name, 0.1)
        self.pool, self.pixel_memory = int(self.pool), int(self.pixel_memory)
        self.region_memory = int(self.region_memory)
        channels = student.tap_channels["decoder"]
        self.projector = projector(channels)
        self.num_classes = teacher.num_classes
        seed = int(torch.randint(2 ** 62, ()))  # from the run's seed: the same on every rank
        self.memory = ClassMemory(self.num_classes, teacher.tap_channels["decoder"], self.pixel_memory,
                                  self.region_memory, seed, self.enqueue)

    def get_extra_state(self):
        return self.memory.state()

    def set_extra_state(self, state):
        self.memory.load(state)

    def notes(self):
        return [f"CIRKD: lambda {self.weight} x (KD {self.kd}, mini-batch {self.minibatch}, memory pixel "
                f"{self.memory_pixel}, region {self.memory_region}); T {self.temperature}, decoder tap pooled "
                f"{self.pool}x{self.pool}; queues of {self.pixel_memory} pixels, {self.region_memory} regions a class"]

    def forward(self, student, teacher, warmup=False, labels=None):
        s, t = student.taps["decoder"], teacher.taps["decoder"]
        if self.pool > 1:
            s, t = (F.avg_pool2d(x, self.pool, ceil_mode=True) for x in (s, t))
        small = F.interpolate(labels[:, None].float(), size=s.shape[2:], mode="nearest")[:, 0].long()
        terms = {"cirkd/kd": self.kd * kd_loss(student.logits, teacher.logits),
                 "cirkd/minibatch": self.minibatch * minibatch_loss(s, t, self.temperature)}
        t = F.normalize(fp32(t), dim=1)
        s = F.normalize(fp32(self.projector(s)), dim=1)
        memory = self.memory.to(t.device)
        memory.enqueue(gather_batch(t), gather_batch(small))  # before the loss, as CIRKD
        valid = (small != IGNORE).flatten()
        s_anchors, t_anchors = (x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])[valid] for x in (s, t))
        anchors = sum_over_ranks(valid.sum().float())
        for name, queue, contrast in (("pixel", memory.pixel, self.PIXEL_CONTRAST),
                                      ("region", memory.region, self.REGION_CONTRAST)):
            keys = memory.keys(queue, contrast // self.num_classes + 1)
            loss = memory_contrast_loss(s_anchors, t_anchors, keys, self.temperature)
            loss = sum_over_ranks(loss) / anchors if anchors > 0 else 0 * s.sum()
            terms[f"cirkd/memory_{name}"] = getattr(self, f"memory_{name}") * loss
        return {k: self.weight * v for k, v in terms.items()}
