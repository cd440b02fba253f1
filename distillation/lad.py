"""LAD: Label-Assisted Distillation (Qiu et al., ECCV 2024, arXiv 2407.13254; skyshoumeng/Label_Assisted_Distillation,
``train_baseline.py``).

The AttnFD paper's table has a "LAD" row (VOC 71.42) whose reference its repository does not name; those rows
were there on 2024-03-08, before this paper appeared (2024-07-18), so they may be another method.  This is the
label-assisted one, as the project's issue asked for when the paper's LAD could not be identified.

* The teacher (``train.py --label-assisted``, ``LabelAssistedTeacher``) has the student's architecture with a 4th
  input channel holding a noised label map (``distillation.labels``); it trains on two independently encoded
  paths of each batch, CE on each plus the consistency 5 x (CWD(path 1 || path 2) + CWD(path 2 || path 1)), the
  target side detached, CWD with channel normalisation at T 4.
* The student (a plain 3-channel network: the reference's student is the same 4-channel net with an all-zero
  label channel, which adds nothing) learns CE + 3 x CWD(student || teacher) at T 4 from the teacher fed the
  fixed label encoding.

Adapted: no auxiliary CE (DeepLabV3+ has no auxiliary head; the reference weights it 0.4 for the teacher and
0.02 for the student), and the student trains from its usual initialisation with the run's schedule (the
reference fine-tunes a trained baseline at lr 0.001).  The consistency term is divided by the batch size like
the other terms from mean-CE codebases (``Method.divide_by_batch``).
"""
import torch.nn as nn

from utils.distributed import global_batch

from .base import Hyper, Method, register_method
from .cwd import cwd_loss
from .labels import label_input, random_label_input

CONSISTENCY = 5.0  # the teacher's two-path consistency weight


class LabelAssistedTeacher(nn.Module):
    """What train.py trains for ``--label-assisted``: ``model`` (a DeepLab with ``label_channel``) on two
    randomly encoded paths; returns (path 1 logits, {"lad/ce_path2", "lad/consistency"}), the training step adds
    path 1's CE."""
    takes_labels = True

    def __init__(self, model, criterion):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, images, labels=None):
        c = self.model.num_classes
        first, second = (self.model(random_label_input(images, labels, c)) for _ in range(2))
        consistency = cwd_loss(first, second.detach()) + cwd_loss(second, first.detach())
        return first, {"lad/ce_path2": self.criterion(second.float(), labels),
                       "lad/consistency": CONSISTENCY * consistency / global_batch(images)}

    def validation_input(self, images, labels):
        """The input the teacher sees when it distils: the fixed label encoding."""
        return label_input(images, labels, self.model.num_classes)


@register_method
class LAD(Method):
    name, title = "lad", "LAD"
    hyper = (Hyper("weight", "lad_lambda", 0.0, "LAD (label-assisted teacher) CWD weight (paper: 3); 0 = off; needs "
                   "a teacher trained with train.py --label-assisted", paper=3.0, low=0),
             Hyper("temperature", "lad_T", 4.0, "LAD CWD temperature (paper: 4)", low=0, low_open=True))
    teacher_needs = frozenset({"logits"})

    def __init__(self, student, teacher, **values):
        super().__init__(student, teacher, **values)
        if not getattr(teacher, "label_channel", False):
            raise ValueError("--lad_lambda needs a label-assisted teacher (train one with train.py "
                             "--label-assisted); the teacher checkpoint is a plain one")

    def forward(self, student, teacher, warmup=False):
        return {"lad": self.weight * cwd_loss(student.logits, teacher.logits, self.temperature)}
