#!/usr/bin/env bash
# docs/methods.md's tables: baseline and each distillation method alone (its papers' weight,
# every other weight 0), same data, schedule and seeds, on the study's easy synthetic task.
#   bash scripts/methods.sh [OUT]        (OUT defaults to study/; reuses the study's data and teacher)
#   ROWS="baseline cirkd lad afdcd" bash scripts/methods.sh      (some rows only; finished cells are reused)
#   MATCH=flops ROWS="baseline kd overhaul dist cirkd lad afdcd attnfd" bash scripts/methods.sh
#       (equal compute: each row also as <row>.flops, trained for the iterations that cost the baseline's training
#        FLOPs; MATCH=time: its wall seconds on this machine; the table: OUT/budget-MATCH.md)
# LAD distils from its own label-assisted ResNet-18 teacher (train.py --label-assisted), trained once here.
# CPU, 2 cores, JOBS=2: a run takes 1.5-3 minutes on a 2-core AMD EPYC (up to 8 on slower machines; Af-DCD's 12-20),
# so 5 seeds of the 11 rows take 1.5-2.5 hours (plus the teacher, 9-25 min, and LAD's, 4-8, if they are not there
# yet); MATCH=flops with the 8 rows above: 75 cells, about 2 hours on that EPYC.
# shellcheck source=scripts/tasks.sh
source "$(dirname "$0")/tasks.sh" "$@"
ALL="baseline attnfd kd at overhaul cwd dist skd cirkd lad afdcd"
ROWS=${ROWS:-$ALL}
for name in $ROWS; do  # before anything trains
  [[ " $ALL " == *" $name "* ]] || fail "unknown row '$name' in ROWS (rows: $ALL)"
done
MATCH=${MATCH:-}
budget=()
if [ -n "$MATCH" ]; then
  [[ $MATCH == flops || $MATCH == time ]] || fail "MATCH=$MATCH: give flops or time (or leave it unset)"
  [[ " $ROWS " == *" baseline "* ]] || fail "MATCH=$MATCH matches the baseline's cost: put baseline in ROWS"
  budget=(--match-budget baseline --budget-by "$MATCH" --table "$OUT/budget-$MATCH")
fi
task easy
LAD_T=$OUT/teachers/synthetic/lad-teacher-easy/experiment_0/checkpoint.pth.tar
if [[ " $ROWS " == *" lad "* && ! -f $LAD_T ]]; then
  # shellcheck disable=SC2086
  ATTNFD_SYNTHETIC_ROOT=$root python train.py --backbone resnet18 --label-assisted --epochs 20 --eval-interval 5 \
    --seed 1 --run-dir "$OUT/teachers" --checkname lad-teacher-easy $COMMON --workers 1
fi
KD="train_kd.py --teacher_path $T --attn_lambda 0"
declare -A ROW=(
  [baseline]="train.py"
  [attnfd]="train_kd.py --teacher_path $T"
  [kd]="$KD --kd_lambda 1"
  [at]="$KD --at_lambda 1000"
  [overhaul]="$KD --overhaul_lambda 1e-5"
  [cwd]="$KD --cwd_lambda 3"
  [dist]="$KD --dist_lambda 1"
  [skd]="$KD --skd_lambda 1"
  [cirkd]="$KD --cirkd_lambda 1"
  [lad]="train_kd.py --teacher_path $LAD_T --attn_lambda 0 --lad_lambda 3"
  [afdcd]="$KD --afdcd_lambda 1"
)
runs=()
for name in $ROWS; do runs+=(--run "$name" "${ROW[$name]}"); done
# shellcheck disable=SC2086
ATTNFD_SYNTHETIC_ROOT=$root python sweep.py --out "$OUT/methods" --jobs "$JOBS" --seeds $SEEDS "${budget[@]}" "${runs[@]}" \
  -- --backbone resnet18 --epochs 10 $COMMON
