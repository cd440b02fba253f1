"""The training stack behind train.py and train_kd.py: ``args`` (flags and their resolved defaults), ``build``
(builders), ``loop`` (``train_step``, ``train_one_epoch``), ``state`` (the run state and checkpoints) and
``main`` (one run, start to end)."""
from .args import get_args_parser, resolve_args
from .build import SGD
from .loop import TrainingError, train_one_epoch, train_step
from .main import Run, main
from .state import RunState

__all__ = ["Run", "SGD", "RunState", "TrainingError", "get_args_parser", "main", "resolve_args", "train_one_epoch",
           "train_step"]
