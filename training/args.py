"""The flags of train.py / train_kd.py and the reference's rules for the ones left out (``resolve_args``)."""
import argparse
import os
import sys

from dataloaders import DATASETS, DatasetError, dataset_root, get_dataset
from distillation import add_args as add_distillation_args
from modeling.backbone import BACKBONES
from utils.cli import ArgumentParser, UsageError, number
from utils.device import default_workers, device_memory

DEFAULT_TEACHER = "pretrained/teacher-pascal.pth.tar"  # the reference's default path
count, positive = number(int, 0), number(int, 1)


def get_args_parser(kd=False):
    p = ArgumentParser(description="AttnFD: DeepLabV3+ " + ("distillation" if kd else "training"))
    p.add_argument("--backbone", default="resnet18" if kd else "resnet101", choices=sorted(BACKBONES))
    p.add_argument("--out-stride", type=int, default=16, choices=[8, 16], help="network output stride")
    p.add_input("--dataset", kind="dataset", default="pascal", choices=list(DATASETS))
    p.add_argument("--use-sbd", action="store_true", help="add SBD train+val (minus VOC val) to Pascal train")
    p.add_argument("--workers", type=count, default=default_workers(), metavar="N",
                   help="dataloader worker processes (default: this machine's CPUs, at most 8)")
    p.add_argument("--base-size", type=number(int, 2), default=513,
                   help="base image size of the random scale (short side drawn from [base/2, 2 base])")
    p.add_argument("--crop-size", type=positive, default=513, help="train crop; val short side")
    p.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch under torchrun (nn.SyncBatchNorm on GPUs, "
                        "an all-reduce BatchNorm on CPU); no effect in one process")
    p.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics and affine fixed")
    p.add_argument("--loss-type", default="ce", choices=["ce", "focal"])
    p.add_argument("--epochs", type=positive, default=None, metavar="N",
                   help="default per dataset: " + str({n: s.epochs for n, s in DATASETS.items()}))
    p.add_argument("--iterations", type=positive, default=None, metavar="N",
                   help="train N iterations in all instead of --epochs (which it overrides): the lr schedule runs "
                        "over N and the last epoch stops early and is validated; sweep.py --match-budget sets it")
    p.add_argument("--start_epoch", "--start-epoch", dest="start_epoch", type=count, default=0, metavar="N")
    p.add_argument("--batch-size", type=positive, default=None, metavar="N",
                   help="the global batch, split evenly across torchrun processes (default 6 per GPU), so the "
                        "default lr rule and every loss are those of one process with this batch")
    p.add_argument("--test-batch-size", type=positive, default=None, metavar="N",
                   help="accepted for compatibility and ignored: validation uses batch 1 since image sizes differ")
    p.add_argument("--use-balanced-weights", action="store_true", help="class-balanced CE weights (cached .npy)")
    p.add_argument("--lr", type=number(float, 0, high=10, low_open=True), default=None, metavar="LR",
                   help="default {dataset lr} / 6 * global batch: " + str({n: s.lr for n, s in DATASETS.items()}))
    p.add_argument("--lr-scheduler", default="poly", choices=["poly", "step", "cos"])
    p.add_argument("--lr-step", type=positive, default=None,
                   help="epochs per 10x decay for --lr-scheduler step (default epochs // 3)")
    p.add_argument("--momentum", type=number(float, 0, 1), default=0.9, metavar="M")
    p.add_argument("--weight-decay", type=number(float, 0), default=5e-4, metavar="M")
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--fused-sgd", action="store_true",
                   help="the fused SGD update: much faster on CPU (ResNet-101 update 0.19 -> 0.04 s on 2 cores), "
                        "but not bit-identical with the default multi-tensor update (last-digit differences), so "
                        "its runs do not reproduce the default's seed for seed; off under CPU fp16 autocast")
    p.add_argument("--no-cuda", action="store_true", help="run on the CPU even if CUDA is available")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: bf16 autocast on Ampere+ GPUs and bf16-capable CPUs, fp16 + GradScaler on "
                        "older GPUs; weights, losses and checkpoints stay fp32")
    p.add_argument("--amp-dtype", default="auto", choices=["auto", "bf16", "fp16"], help="override --amp's choice")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions with --amp)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (slow first epoch; pays off on long GPU runs)")
    p.add_argument("--gpu-ids", default="0",
                   help="the GPU of a single-process run; several GPUs: torchrun --nproc_per_node=N (README)")
    p.add_argument("--seed", type=count, default=1, metavar="S")
    p.add_input("--resume", default=None,
                help="checkpoint to resume from: weights, optimizer(s), epoch and iteration, RNG states; on CPU the "
                     "resumed run ends with the same weights as an uninterrupted one. The run goes on in its own "
                     "folder (the one the checkpoint is in, or records), whatever --run-dir / --checkname say")
    p.add_argument("--save-every", type=count, default=0, metavar="N",
                   help="also write the checkpoint every N iterations (atomically), so a killed run loses at most N "
                        "steps; 0: at the end of each epoch only")
    p.add_argument("--checkname", default=None,
                   help="run name (default deeplab-<backbone> / attnfd-<backbone>); a --resume keeps its run's")
    p.add_argument("--ft", action="store_true", help="fine-tune: load --resume weights only, start at epoch 0")
    p.add_argument("--eval-interval", type=positive, default=1, help="validate every N epochs")
    p.add_argument("--log-interval", type=positive, default=10, metavar="N",
                   help="write per-iteration losses to tensorboard every N iterations (one device sync each)")
    p.add_argument("--no-val", action="store_true", help="skip validation")
    p.add_argument("--no-pretrained", action="store_true", help="do not load ImageNet weights into the backbone")
    p.add_argument("--attention-in-path", action="store_true",
                   help="put CBAM in the forward path at the three taps, so its weights train (teacher option)")
    p.add_argument("--full-res-val", action="store_true", help="validate at original resolution (no resize)")
    p.add_output("--run-dir", kind="run", default=None,
                 help="root of <run-dir>/<dataset>/<checkname>/experiment_<k> (default: run); a --resume keeps its "
                      "run's")
    if kd:
        add_distillation_flags(p)
    else:
        p.add_argument("--label-assisted", action="store_true",
                       help="train a label-assisted teacher for LAD (train_kd.py --lad_lambda): a 4th input channel "
                            "holds a noised label map, two noised paths with a consistency term (Qiu et al. 2024)")
    return p


def add_distillation_flags(p):
    p.add_input("--teacher_path", "--teacher-path", dest="teacher_path", default=DEFAULT_TEACHER)
    p.add_argument("--teacher-backbone", default="resnet101", choices=sorted(BACKBONES),
                   help="used when the teacher checkpoint does not record its backbone")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the epoch-0 connector warm-up (AttnFD, Overhaul); connectors then train with the student")
    p.add_argument("--teacher-train-mode", action=argparse.BooleanOptionalAction, default=None,
                   help="teacher in train mode (batch-statistics BN, decoder dropout), still without autograd; "
                        "--no-teacher-train-mode freezes it in eval mode. Default: train mode when AttnFD or "
                        "Overhaul is on (their references; for AttnFD the README study supports it), else eval")
    p.add_argument("--distill-aspp-dropout", action="store_true",
                   help="keep the ASPP Dropout(0.5) in the distillation forward (the reference's extract_feature "
                        "skips it for teacher and student; plain train.py keeps it)")
    p.add_argument("--compile-methods", action="store_true",
                   help="torch.compile each distillation method alone (its attention modules, connectors and losses: "
                        "many small kernels), not the student or the teacher: compiles in seconds")
    p.add_argument("--student-cbam-mlp", default="train", choices=["train", "frozen"],
                   help="the student's CBAM channel-gate MLP (Linear layers): trained with its part, or frozen "
                        "at init as in the reference, whose optimizer collects only Conv2d/BN parameters")
    add_distillation_args(p)  # each method's weight flag (0 = off) and its hyperparameters


def resolve_args(args, kd=False, world=1, cuda=False, gpu_count=0):
    """A copy of ``args`` with the reference's defaults filled in, for ``world`` processes; UsageError (one line)
    for impossible values.  A pure function: epochs and lr from the dataset,
    ``gpu_ids`` as a list.  The batch defaults to 6 per GPU; lr = dataset lr / 6 x the *global* batch, whatever
    the number of processes: the losses are those of the global batch, so N processes then train exactly as one
    process with that batch (the reference divides by its GPU count instead, which gives a 4-GPU run of
    batch 8 a third of the lr a 1-GPU run of batch 8 gets).  ``run_dir`` and ``checkname`` stay None when not
    given: the run's home decides them (``training.state.run_home``)."""
    a = argparse.Namespace(**vars(args))
    a.kd, a.cuda = kd, cuda
    a.label_assisted = getattr(a, "label_assisted", False)
    try:
        a.gpu_ids = [int(s) for s in str(a.gpu_ids).split(",")] if a.gpu_ids != "" else [0]
    except ValueError:
        raise UsageError(f"--gpu-ids must be a comma-separated list of integers, got {a.gpu_ids!r}") from None
    if len(a.gpu_ids) > 1 and world == 1:
        raise UsageError(f"--gpu-ids {','.join(map(str, a.gpu_ids))}: several GPUs run as one process each: "
                         f"torchrun --nproc_per_node={len(a.gpu_ids)} {os.path.basename(sys.argv[0])} ... "
                         "(CUDA_VISIBLE_DEVICES picks the GPUs)")
    absent = [g for g in a.gpu_ids if g >= gpu_count]
    if world == 1 and not a.no_cuda and absent and a.gpu_ids != [0]:
        raise UsageError(f"--gpu-ids {','.join(map(str, absent))}: this machine has {gpu_count} GPU(s) (ids from 0); "
                         "pick one of them or pass --no-cuda")
    spec = get_dataset(a.dataset)
    a.epochs = spec.epochs if a.epochs is None else a.epochs
    a.batch_size = 6 * (world if cuda else 1) if a.batch_size is None else a.batch_size
    a.lr = spec.lr / 6 * a.batch_size if a.lr is None else a.lr
    name = a.checkname
    if name is not None and (name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name)):
        raise UsageError(f"--checkname {a.checkname!r} must be a plain folder name (it names "
                         f"<run-dir>/<dataset>/<checkname>; use --run-dir to put runs elsewhere)")
    if a.start_epoch >= a.epochs and a.iterations is None:  # with --iterations: checked when the epochs are known
        raise UsageError(f"--start_epoch {a.start_epoch} with --epochs {a.epochs}: nothing to train")
    if a.crop_size < 2 * a.out_stride:
        raise UsageError(f"--crop-size {a.crop_size} is too small for --out-stride {a.out_stride}: the deepest "
                         f"features would be under 2x2; use at least {2 * a.out_stride}")
    if a.batch_size % world:
        raise UsageError(f"--batch-size {a.batch_size} is the global batch and must split evenly across {world} "
                         "processes")
    if a.batch_size // world < 2 and not a.freeze_bn:
        raise UsageError(f"--batch-size {a.batch_size}: each of the {world} process(es) needs at least 2 images (a "
                         f"BatchNorm of the ASPP's pooled branch sees one value per channel otherwise); use a larger "
                         f"--batch-size, or --freeze-bn")
    if kd:
        check_methods(a)
    return a


def check_methods(a):
    """Every method switched on, its values checked against what they mean for this run (``Method.check``)."""
    from distillation import METHODS, RunFacts, settings_from_args

    try:
        classes = len(get_dataset(a.dataset).class_names(dataset_root(a.dataset)))
    except DatasetError:  # the dataset's own errors come when it is read
        classes = None
    facts = RunFacts(a.crop_size, a.batch_size, classes,
                     device_memory(a.cuda, a.gpu_ids[0] if a.gpu_ids and a.cuda else 0))
    for name, values in settings_from_args(a).items():
        problem = METHODS[name].check(values, facts)
        if problem:
            raise UsageError(problem)
