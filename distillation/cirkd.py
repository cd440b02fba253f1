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


def memory_contrast_loss(s_anchors, t_anchors, keys, temperature=0.1, kd_temperature=1.0, valid=None):
    """KL at ``kd_temperature`` between the student's and the teacher's similarities (/ ``temperature``) of the
    anchors (A x D, L2-normalised) to ``keys`` (K x D), summed over the anchors (``valid``: a 0/1 mask (A,) of the
    ones that count; the caller divides)."""
    s_anchors, t_anchors = fp32(s_anchors), fp32(t_anchors)
    keys = keys.to(s_anchors.dtype)
    with torch.autocast(s_anchors.device.type, enabled=False):
        s_logits = s_anchors @ keys.T / temperature / kd_temperature
        t_logits = t_anchors @ keys.T / temperature / kd_temperature
        if valid is None:
            return kd_temperature ** 2 * _kl(s_logits, t_logits, 1)
        kl = F.softmax(t_logits, 1) * (F.log_softmax(t_logits, 1) - F.log_softmax(s_logits, 1))
        return kd_temperature ** 2 * (kl.sum(1) * valid).sum()


class ClassMemory:
    """Per-class queues of teacher embeddings: ``pixel`` (C, P, D) and ``region`` (C, R, D), initialised with
    L2-normalised N(0, 1) vectors, with their write pointers (C,); ``generator`` makes every random draw, on the
    queues' device.  Everything stays on the device, without a host sync: the classes of an image are one-hot
    masks, a class's pixels are the lowest random keys among its positions, and what an image lacks is written
    to one spare slot per class (the queues' last, never read)."""

    def __init__(self, num_classes, dim, pixel_size, region_size, seed, enqueue="class"):
        self.generator, self.enqueue_mode, self.pending = torch.Generator().manual_seed(seed), enqueue, None
        pixel = F.normalize(torch.randn(num_classes, pixel_size, dim, generator=self.generator), dim=2)
        region = F.normalize(torch.randn(num_classes, region_size, dim, generator=self.generator), dim=2)
        self.slots = [torch.cat([q, q.new_zeros(num_classes, 1, dim)], 1) for q in (pixel, region)]  # + the spare
        self.pixel_ptr = torch.zeros(num_classes, dtype=torch.long)
        self.region_ptr = torch.zeros(num_classes, dtype=torch.long)

    @property
    def pixel(self):
        return self.slots[0][:, :-1]

    @property
    def region(self):
        return self.slots[1][:, :-1]

    @property
    def sizes(self):
        return self.pixel.shape[1], self.region.shape[1]

    def to(self, device):
        """Queues, pointers and generator on ``device`` (the generator: a device generator seeded from the CPU one,
        or the state a checkpoint saved there)."""
        device = torch.device(device)
        if self.pixel.device != device:
            self.slots = [q.to(device) for q in self.slots]
            self.pixel_ptr, self.region_ptr = self.pixel_ptr.to(device), self.region_ptr.to(device)
        if self.generator.device.type != device.type:
            generator = torch.Generator(device)
            if self.pending is not None and self.pending.numel() == generator.get_state().numel():
                generator.set_state(self.pending)  # a resumed run's, saved on this kind of device
            else:
                generator.manual_seed(int(torch.randint(2 ** 62, (), generator=self.generator)))
            self.generator, self.pending = generator, None
        return self

    def randperm(self, n, device):
        return torch.randperm(n, generator=self.generator, device=device)

    def draw(self, classes, counts):
        """(N, C, K) positions of up to K = 16 random pixels per image and class, from ``classes`` (N, C, HW, the
        one-hot class masks) and ``counts`` (N, C): among the class's own pixels, or (``enqueue == "authors"``)
        among the image positions 0..n-1, n the class's pixel count (CIRKD's code)."""
        n, _, hw = classes.shape
        keys = torch.rand(n, 1, hw, generator=self.generator, device=classes.device)
        among = classes if self.enqueue_mode == "class" else \
            torch.arange(hw, device=classes.device) < counts[..., None]
        return torch.topk(torch.where(among, keys, 2.0), min(PIXELS_PER_CLASS, hw), dim=2, largest=False).indices

    @torch.no_grad()
    def enqueue(self, feats, labels, picks=None):
        """``feats`` (N, D, H, W) L2-normalised teacher embeddings and ``labels`` (N, H, W) of the global batch;
        ``picks``: the positions to enqueue (``draw``'s), drawn here when None.  Per class, images in order: the
        class's normalised mean to the region queue (pointer + 1), its pixels to the pixel queue; a write that would
        reach the end goes to the last slots and the pointer back to 0 (the reference's rule)."""
        feats, labels = feats.flatten(2), labels.flatten(1)
        num_classes, (pixel_size, region_size) = self.pixel.shape[0], self.sizes
        classes = labels[:, None, :] == torch.arange(num_classes, device=labels.device)[None, :, None]  # (N, C, HW)
        counts = classes.sum(2)
        present = counts > 0
        cls = torch.arange(num_classes, device=feats.device)
        # regions: one slot per image that has the class
        means = F.normalize(torch.einsum("nch,ndh->ncd", classes.to(feats.dtype), feats), dim=2)
        order = self.region_ptr + present.cumsum(0) - 1
        slot = torch.where(present, order % region_size, region_size)
        self.slots[1].index_put_((cls.expand_as(slot), slot), means.to(self.slots[1].dtype))
        self.region_ptr = (self.region_ptr + present.sum(0)) % region_size
        # pixels: k = min(n, 16) per image and class, written at the pointer; at most one wrap per step (a queue
        # holds at least a step's entries)
        picks = self.draw(classes, counts) if picks is None else picks
        k = counts.clamp(max=picks.shape[2])
        end = self.pixel_ptr + k.cumsum(0)  # (N, C): where each image's write ends, without wrapping
        begin = end - k
        wraps = (end >= pixel_size) & (begin < pixel_size) & (k > 0)
        wrapped_at = (end * wraps).sum(0)  # the wrapping image's end (0: no wrap)
        start = torch.where(wraps, pixel_size - k, torch.where(begin >= pixel_size, begin - wrapped_at, begin))
        j = torch.arange(picks.shape[2], device=feats.device)
        valid = j < k[..., None]  # (N, C, K)
        picked = F.normalize(torch.gather(feats.transpose(1, 2), 1, picks.flatten(1)[..., None].expand(
            -1, -1, feats.shape[1])), dim=2).view(*picks.shape, -1)
        at = start[..., None] + j
        for now in (valid & ~wraps[..., None], valid & wraps[..., None]):  # the wrapping write last: it wins
            self.slots[0].index_put_((cls[:, None].expand_as(at), torch.where(now, at, pixel_size)),
                                     picked.to(self.slots[0].dtype))
        self.pixel_ptr = torch.where(wraps.any(0), end[-1] - wrapped_at, end[-1])

    def keys(self, queue, per_class):
        """``per_class`` random slots of ``queue``, the same for every class: (C x per_class, D)."""
        index = self.randperm(queue.shape[1], queue.device)[:per_class]
        return queue[:, index].reshape(-1, queue.shape[2])

    def state(self):
        return {"pixel": self.pixel.cpu(), "region": self.region.cpu(),
                "rng": self.generator.get_state(),
                "pixel_ptr": self.pixel_ptr.cpu(), "region_ptr": self.region_ptr.cpu()}

    def load(self, state):
        if state["pixel"].shape[1] != self.sizes[0] or state["region"].shape[1] != self.sizes[1] \
                or state["pixel"].shape[::2] != self.pixel.shape[::2]:
            raise ValueError(f"the checkpoint's CIRKD queues are {tuple(state['pixel'].shape)} and "
                             f"{tuple(state['region'].shape)}, this run's {(self.pixel.shape[0], self.sizes[0])} and "
                             f"{(self.region.shape[0], self.sizes[1])}: resume with the same --cirkd_pixel_memory and "
                             f"--cirkd_region_memory")
        device = self.pixel.device
        self.slots = [torch.cat([q, q.new_zeros(q.shape[0], 1, q.shape[2])], 1).to(device)
                      for q in (state["pixel"], state["region"])]
        self.pixel_ptr, self.region_ptr = (torch.as_tensor(state[k]).to(device) for k in ("pixel_ptr", "region_ptr"))
        if state["rng"].numel() == self.generator.get_state().numel():
            self.generator.set_state(state["rng"])
        else:  # a generator of another kind of device (its state's size tells): set when the queues move there
            self.pending = state["rng"]


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
        valid = (small != IGNORE).flatten().float()  # a mask, not an index: no host sync
        s_anchors, t_anchors = (x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in (s, t))
        anchors = sum_over_ranks(valid.sum()).clamp(min=1)  # no anchor anywhere: the sums are 0
        for name, queue, contrast in (("pixel", memory.pixel, self.PIXEL_CONTRAST),
                                      ("region", memory.region, self.REGION_CONTRAST)):
            keys = memory.keys(queue, contrast // self.num_classes + 1)
            loss = memory_contrast_loss(s_anchors, t_anchors, keys, self.temperature, valid=valid)
            terms[f"cirkd/memory_{name}"] = getattr(self, f"memory_{name}") * sum_over_ranks(loss) / anchors
        return {k: self.weight * v for k, v in terms.items()}
