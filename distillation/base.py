"""The method interface and registry.  A method is a ``Method`` subclass in its own module, registered with
``@register_method``; the class declares everything the rest of the code needs:

* ``hyper``: its hyperparameters as :class:`Hyper` (attribute, flag, command-line default, help, the paper's
  value); the first is its weight, whose flag switches it on (0 = off).  ``add_args``, ``values_from_args``,
  the constructor and ``notes`` are generic: a method without modules of its own needs only ``forward``;
* ``teacher_needs`` / ``student_needs``: what its loss reads besides the taps (``"logits"``, ``"stages"``:
  the pre-ReLU backbone stages and heads); the teacher runs once per step with the union of the needs;
* its trainable modules (connectors) as its own parameters, with ``lr_mult`` (x the base lr), ``warmup``
  (they train alone in epoch 0, the student frozen: AttnFD's and Overhaul's reference scripts) and
  ``train_with_student`` (they stay in the main optimizer afterwards);
* ``teacher_train_mode``: whether its reference ran the teacher in train mode (the default when neither
  ``--teacher-train-mode`` nor ``--no-teacher-train-mode`` is given);
* ``divide_by_batch``: whether the Distiller divides its terms by the global batch size.  This codebase's
  CE is divided by the batch size after its pixel mean (the reference's ``batch_average``, kept: AttnFD's and
  Overhaul's weights were set against it); KD, AT, CWD, DIST and SKD come from codebases whose CE is a
  plain mean, so their terms get the same division and keep their papers' ratio to the CE.

Every loss reduces over the *global* batch (sums via ``utils.distributed.sum_over_ranks``, divided by global
counts), so each rank holds the loss a single process would compute on the whole batch.
"""
from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F

from utils.cli import number
from utils.distributed import global_batch, sum_over_ranks

METHODS = {}


@dataclass(frozen=True)
class RunFacts:
    """What a method's values are checked against: the train crop, the global batch, the classes (None: not known
    yet) and the bytes of memory on the training device."""
    crop_size: int
    batch_size: int
    num_classes: int = None
    memory: int = None


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter: attribute ``name``, command-line ``flag`` (its argparse dest too, dashes read as
    underscores), the command-line ``default``, ``help``, the ``paper``'s value (the constructor's default;
    None: ``default``), ``choices`` for a string, else a number (``kind``: float or int) at least ``low`` (above it
    if ``low_open``); ``term``: it weighs one of the method's terms (a method whose terms all weigh 0 is refused)."""
    name: str
    flag: str
    default: object
    help: str
    paper: object = None
    choices: tuple = None
    low: float = None
    low_open: bool = False
    kind: type = float
    term: bool = False

    @property
    def dest(self):
        return self.flag.replace("-", "_")

    @property
    def value(self):
        return self.default if self.paper is None else self.paper

    def add_to(self, parser):
        spellings = dict.fromkeys([f"--{self.flag}", f"--{self.flag.replace('_', '-')}"])  # --kd_T, --kd-T
        kind = {"choices": self.choices} if self.choices else {"type": number(self.kind, self.low,
                                                                             low_open=self.low_open)}
        parser.add_argument(*spellings, dest=self.dest, default=self.default, help=self.help, **kind)


class Method(nn.Module):
    name = ""                  # registry key, term prefix in logs, checkpoint key of its modules
    title = ""                 # its name in the run log and --help
    hyper = ()                 # Hyper declarations; the first is the weight (0 = off)
    teacher_needs = frozenset()
    student_needs = frozenset()
    warmup = False
    train_with_student = True
    lr_mult = 1.0
    teacher_train_mode = False
    divide_by_batch = True
    needs_labels = False       # forward also gets ``labels`` (the ground truth, N x H x W, ignore 255)
    clip_grad_norm = None      # its modules' gradients clipped to this norm before each step (its reference's)

    def __init__(self, student, teacher, **values):
        """``values``: hyperparameters by attribute name; the others take the paper's value."""
        super().__init__()
        unknown = set(values) - {h.name for h in self.hyper}
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown hyperparameters {sorted(unknown)}")
        for h in self.hyper:
            setattr(self, h.name, values.get(h.name, h.value))

    @classmethod
    def add_args(cls, parser):
        group = parser.add_argument_group(f"{cls.title} (on when --{cls.hyper[0].flag} is not 0)")
        for h in cls.hyper:
            h.add_to(group)

    @classmethod
    def values_from_args(cls, args):
        """{attribute: value} of the method's flags in the namespace ``args``."""
        return {h.name: getattr(args, h.dest) for h in cls.hyper}

    @classmethod
    def check(cls, values, facts):
        """What is wrong with the hyperparameter ``values`` of this method switched on, for a run of ``facts``
        (:class:`RunFacts`): a one-line message naming the flag and what to do, or None.  Checked with every other
        argument, before anything is read or written (``training.args.resolve_args``).  Here: a method whose term
        weights are all 0 contributes nothing; methods add what their values mean."""
        terms = [h for h in cls.hyper[1:] if h.term]
        if terms and all(values.get(h.name, h.default) == 0 for h in terms):
            return (f"--{cls.hyper[0].flag} {values[cls.hyper[0].name]} switches {cls.title} on, but "
                    f"{', '.join('--' + h.flag for h in terms)} are all 0: it would contribute nothing; give one of "
                    f"them a weight, or drop --{cls.hyper[0].flag}")
        return None

    @classmethod
    def build(cls, student, teacher, values, missing_attention=(), dataset=None):
        """The method for a student and teacher; ``missing_attention``: the teacher's CBAM keys its checkpoint
        lacked (for methods that use the teacher's attention); ``dataset``: the dataset's name (for weights
        that differ per dataset)."""
        return cls(student, teacher, **values)

    def notes(self):
        """Lines for the run log saying what was decided when the method was built."""
        return [f"{self.title}: " + ", ".join(f"{h.flag} {getattr(self, h.name)}" for h in self.hyper)]

    def forward(self, student, teacher, warmup=False):
        """``student``, ``teacher``: ``modeling.Features``; returns {term name: weighted loss (fp32)}.  A method
        with ``needs_labels`` also takes ``labels``."""
        raise NotImplementedError


class LogitsMethod(Method):
    """A method whose term is ``loss(student logits, teacher logits, *the other hyperparameters in order)``."""
    teacher_needs = frozenset({"logits"})

    @staticmethod
    def loss(s_logits, t_logits, *hyper):
        raise NotImplementedError

    def forward(self, student, teacher, warmup=False):
        others = [getattr(self, h.name) for h in self.hyper[1:]]
        return {self.name: self.weight * self.loss(student.logits, teacher.logits, *others)}


def register_method(cls):
    """Class decorator: ``cls`` becomes available as ``METHODS[cls.name]`` and gets its flags in train_kd.py."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def resize_to(s, t):
    """``s`` bilinearly resized to ``t``'s spatial size (align_corners=True, as the models), if it differs."""
    if s.shape[2:] == t.shape[2:]:
        return s
    return F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=True)


def global_mean(total, x, per_sample=1):
    """``total`` (a sum over this rank's part of the batch ``x``) divided by the global count
    ``global_batch(x) * per_sample``, summed over ranks: the single-process mean on every rank."""
    return sum_over_ranks(total) / (global_batch(x) * per_sample)
