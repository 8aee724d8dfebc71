#!/usr/bin/env bash
# A compressed model against the dense model fine-tuned with the same budget, on the JPEG
# CIFAR-10 data:   benchmarks/prune_against_dense.sh MODEL PRETRAINED RECIPE EPOCHS NAME
# Both runs are resumable (run the script again after a crash; runs go under runs/bench/NAME).
# Writes benchmarks/results/NAME.{md,csv,json}: the pretrained model, the dense fine-tune and the
# compressed one, side by side. Run from the repository root after `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1 PRETRAINED=$2 RECIPE=$3 EPOCHS=$4 NAME=$5
SHARED=${SHARED:-../shared}
RUNS=runs/bench/$NAME
DATA="$SHARED/data/cifar10-jpeg.tar.gz"
COMMON=(--model "$MODEL" --weights "$PRETRAINED" --data "$DATA" --epochs "$EPOCHS"
        --lr 0.02 --batch-size 128 --schedule cosine --quiet --json)
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }

.venv/bin/torchslim train "${COMMON[@]}" --out "$RUNS/dense" $(resume "$RUNS/dense") | tail -n 1
.venv/bin/torchslim compress --recipe "$RECIPE" "${COMMON[@]}" \
    --out "$RUNS/compressed" --repeats 3 $(resume "$RUNS/compressed") | tail -n 1

STEM=$(basename "$RECIPE" .yaml)
cp "$RUNS/dense/model.pt" "$RUNS/dense_ft${EPOCHS}.pt"
cp "$RUNS/compressed/compressed.pt" "$RUNS/${STEM}_ft${EPOCHS}.pt"
.venv/bin/torchslim bench --data "$DATA" \
    --model "$MODEL=$PRETRAINED" \
    --model "$MODEL=$RUNS/dense_ft${EPOCHS}.pt" \
    --model "$MODEL=$RUNS/${STEM}_ft${EPOCHS}.pt" \
    --latency-batch 256 --repeats 20 --out benchmarks/results --stem "$NAME"
