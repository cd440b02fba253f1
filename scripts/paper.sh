#!/usr/bin/env bash
# The AttnFD paper's comparison (arXiv 2403.05451, Tables 1 and 2) in one command, for users with the data and GPUs:
# the published teacher, then the paper's rows x 3 seeds at its schedule (ResNet-18 student, 120 epochs on Pascal
# VOC, batch 6, crop 513, Nesterov), and the table with the paper's number beside each row.
#   bash scripts/paper.sh pascal|cityscapes [OUT]          (OUT defaults to paper/<dataset>)
#   GPUS=8 bash scripts/paper.sh pascal                    (every run under torchrun on 8 GPUs, one after another)
#   SEEDS="1 2 3" DRY_RUN=1 bash scripts/paper.sh pascal   (print the commands, train nothing; DRY_RUN=0: a real run)
#   SMOKE=1 SEEDS=1 JOBS=2 TEACHER=t.pth.tar bash scripts/paper.sh pascal OUT   (the whole pipeline in a minute, on
#       whatever the dataset root holds, e.g. generated VOC-format data: 1 epoch, crop 32, batch 2, no ImageNet
#       weights, no SBD; JOBS trainings at once)
# Resumable: run it again after a stop; finished runs are kept, stopped ones go on from their last checkpoint.
# The LAD row distils from its own label-assisted ResNet-18 teacher (train.py --label-assisted), trained first.
# Nothing of it is claimed as reproduced until it has run on the real data (README, "Reproducing the paper").
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-}
case $DATASET in
  pascal) PAPER=(baseline 67.50 kd 69.13 overhaul 70.67 dist 69.84 cirkd 71.02 lad 71.42 attnfd 73.09)
          DATA="--dataset pascal --use-sbd --epochs 120" ;;
  cityscapes) PAPER=(baseline 64.09 kd 65.21 overhaul 70.31 dist 71.81 cirkd 70.49 lad 71.37 attnfd 73.04)
              DATA="--dataset cityscapes" ;;  # the reference's 200 epochs (the paper does not say)
  *) echo "usage: scripts/paper.sh pascal|cityscapes [OUT]" >&2; exit 2 ;;
esac
OUT=${2:-paper/$DATASET}
PY=${PYTHON:-python3}
GPUS=${GPUS:-1}
SEEDS=${SEEDS:-"1 2 3"}
T=${TEACHER:-pretrained/teacher-$DATASET.pth.tar}
LAD_T=$OUT/lad-teacher/$DATASET/lad-teacher/model_best.pth.tar
COMMON="$DATA --backbone resnet18 --nesterov --batch-size 6 --crop-size 513"
# every argument checked before anything trains
fail() { echo "paper.sh: $*" >&2; exit 2; }
case ${SMOKE:-0} in 0|no|false|"") SMOKE="" ;; 1|yes|true) SMOKE=1 ;; *) fail "SMOKE=$SMOKE: give 1 or 0" ;; esac
[ -z "$SMOKE" ] || COMMON="--dataset $DATASET --epochs 1 --backbone resnet18 --nesterov --batch-size 2 --crop-size 32 \
--base-size 32 --no-pretrained --workers 0"
JOBS=${JOBS:-1}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || fail "JOBS=$JOBS: give the number of trainings at once (1 or more)"
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || fail "GPUS=$GPUS: give a number of GPUs (1 or more)"
case ${DRY_RUN:-0} in 0|no|false|"") DRY_RUN="" ;; 1|yes|true) DRY_RUN=1 ;; *) fail "DRY_RUN=$DRY_RUN: give 1 or 0" ;; esac
for s in $SEEDS; do [[ $s =~ ^[0-9]+$ ]] || fail "SEEDS: '$s' is not a seed (give integers, e.g. SEEDS=\"1 2 3\")"; done
[ -n "${SEEDS// /}" ] || fail "SEEDS is empty"
[ ! -e "$OUT" ] || [ -d "$OUT" ] || fail "OUT $OUT is a file; give a folder"
if [ "$GPUS" -gt 1 ]; then
  LAUNCH=(torchrun --standalone --nproc_per_node "$GPUS"); SWEEP_LAUNCH=(--launcher "torchrun --standalone --nproc_per_node $GPUS")
else
  LAUNCH=("$PY"); SWEEP_LAUNCH=()
fi
run() { if [ -n "${DRY_RUN:-}" ]; then echo "$*"; else "$@"; fi; }

KD="train_kd.py --teacher_path $T --attn_lambda 0"
paper=()
for ((i = 0; i < ${#PAPER[@]}; i += 2)); do paper+=(--paper "${PAPER[i]}" "${PAPER[i+1]}"); done
# shellcheck disable=SC2206
GRID=(--out "$OUT" --seeds $SEEDS --jobs "$JOBS" --resume "${SWEEP_LAUNCH[@]}" "${paper[@]}"
  --run baseline "train.py"
  --run kd "$KD --kd_lambda 1"
  --run overhaul "$KD --overhaul_lambda 1e-5"
  --run dist "$KD --dist_lambda 1"
  --run cirkd "$KD --cirkd_lambda 1"
  --run lad "train_kd.py --teacher_path $LAD_T --attn_lambda 0 --lad_lambda 3"
  --run attnfd "train_kd.py --teacher_path $T --attn_lambda 2"
  -- $COMMON)
[ -n "${DRY_RUN:-}" ] || "$PY" sweep.py --dry-run "${GRID[@]}" > /dev/null  # the grid's arguments, before any training

if [ -z "${DRY_RUN:-}" ] && [ ! -f "$T" ]; then
  echo "paper.sh: no teacher at $T: save the AttnFD release's ResNet-101 checkpoint there (pretrained/README.md), or set TEACHER=path" >&2
  exit 2
fi
# LAD's label-assisted teacher: the student's architecture with the label channel, the paper's schedule
if [ ! -f "$LAD_T" ]; then
  last=$(ls -t "$OUT"/lad-teacher/"$DATASET"/lad-teacher/experiment_*/checkpoint.pth.tar 2>/dev/null | head -1 || true)
  # shellcheck disable=SC2086
  run "${LAUNCH[@]}" train.py $COMMON --label-assisted --seed 1 --run-dir "$OUT/lad-teacher" --checkname lad-teacher \
    ${last:+--resume "$last"}
fi
"$PY" sweep.py ${DRY_RUN:+--dry-run} "${GRID[@]}"
