#!/usr/bin/env bash
# The README's "Does it work?" study, end to end: data, teachers, then one sweep.py command per table.
#   bash scripts/study.sh [OUT]          (OUT defaults to study/; a rerun skips finished runs)
# CPU: about 3 hours on 2 cores (teachers ~25 min each, students ~1.5 min each); a GPU is much faster.
# JOBS (default 2) trainings run at once.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-study}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"1 2 3 4 5"}
# the demo's recipe: 64 px, batch 4, lr 0.05, no ImageNet weights; students 10 epochs (1 of them warm-up), the demo's schedule
COMMON="--dataset synthetic --base-size 64 --crop-size 64 --batch-size 4 --lr 0.05 --workers 0 --no-pretrained"

for task in easy hard; do
  root=$OUT/data/$task/VOC2012
  [ -f "$root/ImageSets/Segmentation/val.txt" ] || \
    python -m dataloaders.synthetic --out "$OUT/data/$task" --difficulty $task --n-train 160 --n-val 40 --size 64 --seed 0
  teacher=$OUT/teachers/synthetic/teacher-$task/experiment_0/checkpoint.pth.tar
  [ -f "$teacher" ] || ATTNFD_SYNTHETIC_ROOT=$root python train.py --backbone resnet101 --epochs 30 --eval-interval 5 \
    --seed 1 --run-dir "$OUT/teachers" --checkname teacher-$task $COMMON --workers 1
done

T=$OUT/teachers/synthetic/teacher-easy/experiment_0/checkpoint.pth.tar
# shellcheck disable=SC2086
ATTNFD_SYNTHETIC_ROOT=$OUT/data/easy/VOC2012 python sweep.py --out "$OUT/easy" --jobs "$JOBS" --seeds $SEEDS \
  --run baseline "train.py" \
  --run attnfd "train_kd.py --teacher_path $T --no-teacher-train-mode" \
  --run aspp-dropout "train_kd.py --teacher_path $T --distill-aspp-dropout --no-teacher-train-mode" \
  --run teacher-train-mode "train_kd.py --teacher_path $T --teacher-train-mode" \
  --run parameter-free "train_kd.py --teacher_path $T --teacher-attention parameter-free --no-teacher-train-mode" \
  --run channel-norm "train_kd.py --teacher_path $T --attn-norm channel --no-teacher-train-mode" \
  --run no-warmup "train_kd.py --teacher_path $T --no-warmup --no-teacher-train-mode" \
  --run cbam-mlp-frozen "train_kd.py --teacher_path $T --student-cbam-mlp frozen --no-teacher-train-mode" \
  --run lambda-0.5 "train_kd.py --teacher_path $T --attn_lambda 0.5 --no-teacher-train-mode" \
  --run lambda-8 "train_kd.py --teacher_path $T --attn_lambda 8 --no-teacher-train-mode" \
  -- --backbone resnet18 --epochs 10 $COMMON

T=$OUT/teachers/synthetic/teacher-hard/experiment_0/checkpoint.pth.tar
# shellcheck disable=SC2086
ATTNFD_SYNTHETIC_ROOT=$OUT/data/hard/VOC2012 python sweep.py --out "$OUT/hard" --jobs "$JOBS" --seeds $SEEDS \
  --run baseline "train.py" \
  --run attnfd "train_kd.py --teacher_path $T --no-teacher-train-mode" \
  --run teacher-train-mode "train_kd.py --teacher_path $T --teacher-train-mode" \
  -- --backbone resnet18 --epochs 10 $COMMON
