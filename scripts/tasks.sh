# Sourced by study.sh and methods.sh: the study's recipe and its synthetic tasks.
# The study's recipe: 64 px, batch 4, lr 0.05, no ImageNet weights; students 10 epochs (1 of them warm-up); the demo's
# students train 8.
# shellcheck shell=bash
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-study}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"1 2 3 4 5"}
COMMON="--dataset synthetic --base-size 64 --crop-size 64 --batch-size 4 --lr 0.05 --workers 0 --no-pretrained"

# task easy|hard: writes the task's data and trains its ResNet-101 teacher (each once); sets root and T
task() {
  root=$OUT/data/$1/VOC2012
  [ -f "$root/ImageSets/Segmentation/val.txt" ] || \
    python -m dataloaders.synthetic --out "$OUT/data/$1" --difficulty "$1" --n-train 160 --n-val 40 --size 64 --seed 0
  T=$OUT/teachers/synthetic/teacher-$1/experiment_0/checkpoint.pth.tar
  # shellcheck disable=SC2086
  [ -f "$T" ] || ATTNFD_SYNTHETIC_ROOT=$root python train.py --backbone resnet101 --epochs 30 --eval-interval 5 \
    --seed 1 --run-dir "$OUT/teachers" --checkname "teacher-$1" $COMMON --workers 1
}
