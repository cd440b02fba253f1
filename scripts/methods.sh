#!/usr/bin/env bash
# The README's "Comparison methods" table: baseline and each distillation method alone (its papers' weight,
# every other weight 0), same data, schedule and seeds, on the study's easy synthetic task.
#   bash scripts/methods.sh [OUT]        (OUT defaults to study/; reuses the study's data and teacher)
# CPU: about 65 minutes on 2 cores for 5 seeds (plus the teacher, ~25 min, if scripts/study.sh has not made it).
# shellcheck source=scripts/tasks.sh
source "$(dirname "$0")/tasks.sh" "$@"
task easy
KD="train_kd.py --teacher_path $T --attn_lambda 0"
# shellcheck disable=SC2086
ATTNFD_SYNTHETIC_ROOT=$root python sweep.py --out "$OUT/methods" --jobs "$JOBS" --seeds $SEEDS \
  --run baseline "train.py" \
  --run attnfd "train_kd.py --teacher_path $T" \
  --run kd "$KD --kd_lambda 1" \
  --run at "$KD --at_lambda 1000" \
  --run overhaul "$KD --overhaul_lambda 1e-5" \
  --run cwd "$KD --cwd_lambda 3" \
  --run dist "$KD --dist_lambda 1" \
  --run skd "$KD --skd_lambda 0.5" \
  -- --backbone resnet18 --epochs 10 $COMMON
