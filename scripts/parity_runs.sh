#!/usr/bin/env bash
# Fixed-seed runs whose checkpoints a refactor must not change (README "Extend", "A refactor changes no number"):
#   bash scripts/parity_runs.sh OUT            # writes OUT/{data,run}; about 3 minutes on 2 CPU cores
#   python scripts/compare_checkpoints.py BEFORE/run AFTER/run
# Generated data (24 train / 4 val images of 48 px), 2 epochs each: a ResNet-18 teacher trained with CBAM in
# its path, a baseline, AttnFD (warm-up epoch + one student epoch), and every comparison method at once,
# and an AttnFD run under --amp stopped after epoch 0 and resumed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/parity_runs.sh OUT}
# a new OUT each time: its runs are compared as experiment_0 and its logs are written afresh
[ ! -e "$OUT/run" ] && [ ! -e "$OUT/teacher.log" ] || { echo "parity_runs.sh: $OUT holds earlier parity runs; give a new OUT" >&2; exit 2; }
[ ! -e "$OUT" ] || [ -d "$OUT" ] || { echo "parity_runs.sh: OUT $OUT is a file; give a folder" >&2; exit 2; }
export ATTNFD_SYNTHETIC_ROOT=$OUT/data/VOC2012
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[ -f "$ATTNFD_SYNTHETIC_ROOT/ImageSets/Segmentation/val.txt" ] || \
  python -m dataloaders.synthetic --out "$OUT/data" --n-train 24 --n-val 4 --size 48 --seed 0 > /dev/null
COMMON="--dataset synthetic --base-size 48 --crop-size 48 --batch-size 4 --lr 0.05 --epochs 2 --workers 1
        --no-pretrained --seed 3 --run-dir $OUT/run"
# shellcheck disable=SC2086
python train.py --backbone resnet18 --attention-in-path --checkname teacher $COMMON > "$OUT/teacher.log"
T=$OUT/run/synthetic/teacher/experiment_0/checkpoint.pth.tar
# shellcheck disable=SC2086
python train.py --backbone resnet18 --checkname baseline $COMMON > "$OUT/baseline.log"
# shellcheck disable=SC2086
python train_kd.py --backbone resnet18 --teacher_path "$T" --checkname attnfd $COMMON > "$OUT/attnfd.log"
# shellcheck disable=SC2086
python train_kd.py --backbone resnet18 --teacher_path "$T" --checkname all-methods --kd_lambda 1 --at_lambda 1000 \
  --overhaul_lambda 1e-5 --cwd_lambda 3 --dist_lambda 1 --skd_lambda 1 --skd_pixelwise 0 --use-balanced-weights \
  $COMMON > "$OUT/all-methods.log"
# an AttnFD run stopped after its warm-up epoch and resumed, under bf16 autocast
# shellcheck disable=SC2086
python train_kd.py --backbone resnet18 --teacher_path "$T" --checkname resumed --amp $COMMON --epochs 1 \
  > "$OUT/resumed.log"
# shellcheck disable=SC2086
python train_kd.py --backbone resnet18 --teacher_path "$T" --checkname resumed --amp $COMMON \
  --resume "$OUT/run/synthetic/resumed/experiment_0/checkpoint.pth.tar" >> "$OUT/resumed.log"
echo "checkpoints under $OUT/run/synthetic/*/experiment_0/"
