#!/usr/bin/env bash
# The study of docs/results.md, end to end: data, teachers, then one sweep.py command per table.
#   bash scripts/study.sh [OUT]                    (OUT defaults to study/; a rerun skips finished runs)
#   TABLES="amp mobilenet" bash scripts/study.sh   (some tables only; their data and teachers first)
# Tables: easy hard (the first study: one change at a time from the eval-mode teacher), amp (fp32 vs --amp),
# batch8 (students at batch 8),
# mobilenet (a MobileNetV2 student), round2-easy round2-hard (combinations with the default train-mode teacher),
# longer-easy longer-hard (20 student epochs).  The round-2 and amp tables share the cells of scripts/methods.sh
# (OUT/methods, and OUT/methods-hard for the hard task): runs of one command are trained once.
# CPU, 2 cores, JOBS=2 (default; JOBS trainings at once): teachers ~10 min per 30 epochs, a ResNet-18 run 3-6 min, so
# about 1.5 hours per 10-row table of 5 seeds; a GPU is much faster (run several at once: JOBS=8).
# shellcheck source=scripts/tasks.sh
source "$(dirname "$0")/tasks.sh" "$@"
ALL="easy hard amp batch8 mobilenet round2-easy round2-hard longer-easy longer-hard"
TABLES=${TABLES:-$ALL}
for table in $TABLES; do  # before anything trains
  [[ " $ALL " == *" $table "* ]] || fail "unknown table '$table' in TABLES (tables: $ALL)"
done

sweep() {  # sweep DIFFICULTY ARGS...: sweep.py on that task's data
  local difficulty=$1
  shift
  # shellcheck disable=SC2086
  ATTNFD_SYNTHETIC_ROOT=$OUT/data/$difficulty/VOC2012 python sweep.py --jobs "$JOBS" --seeds $SEEDS "$@"
}

# The combinations the first study left open, with train_kd.py's defaults (train-mode teacher), each row paired
# with attnfd, the default it would replace: DIR SUFFIX
round2() {
  task "$1"
  local out=$OUT/methods$2 KD="train_kd.py --teacher_path $T"
  # shellcheck disable=SC2086
  sweep "$1" --out "$out" --table "$OUT/round2-$1" \
    --run baseline "train.py" \
    --run attnfd "$KD" \
    --run channel-norm "$KD --attn-norm channel" \
    --run no-warmup "$KD --no-warmup" \
    --run channel-norm+no-warmup "$KD --attn-norm channel --no-warmup" \
    --run lambda-1 "$KD --attn_lambda 1" \
    --run lambda-4 "$KD --attn_lambda 4" \
    --compare channel-norm attnfd --compare no-warmup attnfd --compare channel-norm+no-warmup attnfd \
    --compare lambda-1 attnfd --compare lambda-4 attnfd \
    -- --backbone resnet18 --epochs 10 $COMMON
}

# 20 student epochs. A 20-epoch ResNet-18 baseline outgrows the 30-epoch teacher (44.04 vs 39.47 on the easy task,
# seed 1), and on the hard task the 60-epoch one too (48.98 vs 47.08), so these students learn from a 60-epoch
# teacher (attnfd) and a 120-epoch one (attnfd-t120), each paired with the same baseline runs. lambda-4 (the one
# round-2 row that beat attnfd in 5/5 seeds on both tasks) with the 60-epoch teacher on the easy task only: it lost
# to attnfd there (1/5), so it is no candidate left for the hard one.
longer() {
  task "$1" 60
  local T60=$T extra=()
  [ "$1" = easy ] && extra=(--run lambda-4 "train_kd.py --teacher_path $T60 --attn_lambda 4" --compare lambda-4 attnfd)
  task "$1" 120
  # shellcheck disable=SC2086
  sweep "$1" --out "$OUT/longer-$1" \
    --run baseline "train.py" \
    --run attnfd "train_kd.py --teacher_path $T60" \
    "${extra[@]}" \
    --run attnfd-t120 "train_kd.py --teacher_path $T" \
    -- --backbone resnet18 --epochs 20 $COMMON
}

for table in $TABLES; do
  case $table in
    easy)
      task easy
      # shellcheck disable=SC2086
      sweep easy --out "$OUT/easy" \
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
        -- --backbone resnet18 --epochs 10 $COMMON ;;
    hard)
      task hard
      # shellcheck disable=SC2086
      sweep hard --out "$OUT/hard" \
        --run baseline "train.py" \
        --run attnfd "train_kd.py --teacher_path $T --no-teacher-train-mode" \
        --run teacher-train-mode "train_kd.py --teacher_path $T --teacher-train-mode" \
        -- --backbone resnet18 --epochs 10 $COMMON ;;
    amp)  # each --amp row against its fp32 row, seed by seed
      task easy
      # shellcheck disable=SC2086
      sweep easy --out "$OUT/methods" --table "$OUT/amp" \
        --run baseline "train.py" \
        --run baseline-amp "train.py --amp" \
        --run attnfd "train_kd.py --teacher_path $T" \
        --run attnfd-amp "train_kd.py --teacher_path $T --amp" \
        --compare attnfd-amp attnfd \
        -- --backbone resnet18 --epochs 10 $COMMON ;;
    batch8)  # the students at batch 8 (twice the study's), same 10 epochs, lr and teacher
      task easy
      # shellcheck disable=SC2086
      sweep easy --out "$OUT/batch8" \
        --run baseline "train.py" \
        --run attnfd "train_kd.py --teacher_path $T" \
        -- --backbone resnet18 --epochs 10 $COMMON --batch-size 8 ;;
    mobilenet)  # a MobileNetV2 student of the same ResNet-101 teacher; DIST as in scripts/methods.sh
      task easy
      # shellcheck disable=SC2086
      sweep easy --out "$OUT/mobilenet" \
        --run baseline "train.py" \
        --run attnfd "train_kd.py --teacher_path $T" \
        --run dist "train_kd.py --teacher_path $T --attn_lambda 0 --dist_lambda 1" \
        -- --backbone mobilenet --epochs 10 $COMMON ;;
    round2-easy) round2 easy "" ;;
    round2-hard) round2 hard "-hard" ;;
    longer-easy) longer easy ;;
    longer-hard) longer hard ;;
  esac
done
