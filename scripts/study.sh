#!/usr/bin/env bash
# The README's "Does it work?" study, end to end: data, teachers, then one sweep.py command per table.
#   bash scripts/study.sh [OUT]          (OUT defaults to study/; a rerun skips finished runs)
# CPU: about 3 hours on 2 cores (teachers ~25 min each, students ~1.5 min each); a GPU is much faster.
# JOBS (default 2) trainings run at once.
# shellcheck source=scripts/tasks.sh
source "$(dirname "$0")/tasks.sh" "$@"
task easy  # both teachers first
task hard

task easy
# shellcheck disable=SC2086
ATTNFD_SYNTHETIC_ROOT=$root python sweep.py --out "$OUT/easy" --jobs "$JOBS" --seeds $SEEDS \
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

task hard
# shellcheck disable=SC2086
ATTNFD_SYNTHETIC_ROOT=$root python sweep.py --out "$OUT/hard" --jobs "$JOBS" --seeds $SEEDS \
  --run baseline "train.py" \
  --run attnfd "train_kd.py --teacher_path $T --no-teacher-train-mode" \
  --run teacher-train-mode "train_kd.py --teacher_path $T --teacher-train-mode" \
  -- --backbone resnet18 --epochs 10 $COMMON
