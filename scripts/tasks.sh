# Sourced by study.sh and methods.sh: the study's recipe and its synthetic tasks.
# The study's recipe: 64 px, batch 4, lr 0.05, no ImageNet weights; students 10 epochs (1 of them warm-up); the demo's
# students train 8.  SMOKE=1: the same commands on 8 + 2 images of 32 px, each training 1 epoch, the teachers ResNet-18s
# (a test of the scripts).
# shellcheck shell=bash
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-study}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"1 2 3 4 5"}
# every argument checked before anything trains
fail() { echo "$(basename "$0"): $*" >&2; exit 2; }
[ ! -e "$OUT" ] || [ -d "$OUT" ] || fail "OUT $OUT is a file; give a folder"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || fail "JOBS=$JOBS: give the number of trainings at once (1 or more)"
for s in $SEEDS; do [[ $s =~ ^[0-9]+$ ]] || fail "SEEDS: '$s' is not a seed (give integers, e.g. SEEDS=\"1 2 3\")"; done
[ -n "${SEEDS// /}" ] || fail "SEEDS is empty"
[ -z "$(printf '%s\n' $SEEDS | sort | uniq -d)" ] || fail "SEEDS=$SEEDS: give each seed once"
case ${SMOKE:-0} in 0|no|false|"") SMOKE="" ;; 1|yes|true) SMOKE=1 ;; *) fail "SMOKE=$SMOKE: give 1 or 0" ;; esac
COMMON="--dataset synthetic --base-size 64 --crop-size 64 --batch-size 4 --lr 0.05 --workers 0 --no-pretrained"
SIZE=64 N_TRAIN=160 N_VAL=40
if [ -n "$SMOKE" ]; then  # the whole pipeline in a minute: 8 + 2 images of 32 px, every training 1 epoch, ResNet-18s
  COMMON="${COMMON//64/32} --epochs 1 --backbone resnet18" SIZE=32 N_TRAIN=8 N_VAL=2  # (last, so they win)
fi

# task easy|hard [EPOCHS]: writes the task's data and trains its ResNet-101 teacher (each once; EPOCHS defaults to
# 30, the study's teacher, study/teachers/synthetic/teacher-DIFFICULTY; any other count: teacher-DIFFICULTY-EPOCHS);
# sets root and T
task() {
  root=$OUT/data/$1/VOC2012
  [ -f "$root/ImageSets/Segmentation/val.txt" ] || \
    python -m dataloaders.synthetic --out "$OUT/data/$1" --difficulty "$1" --n-train $N_TRAIN --n-val $N_VAL --size $SIZE \
      --seed 0
  local epochs=${2:-30} name=teacher-$1
  [ "$epochs" = 30 ] || name=teacher-$1-$epochs
  T=$OUT/teachers/synthetic/$name/experiment_0/checkpoint.pth.tar
  # shellcheck disable=SC2086
  [ -f "$T" ] || ATTNFD_SYNTHETIC_ROOT=$root python train.py --backbone resnet101 --epochs "$epochs" --eval-interval 5 \
    --seed 1 --run-dir "$OUT/teachers" --checkname "$name" $COMMON --workers 1
}
