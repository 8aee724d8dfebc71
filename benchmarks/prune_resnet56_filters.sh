#!/usr/bin/env bash
# ResNet-56 with 32 % of every channel group removed (structured, thinned) against the dense
# model fine-tuned with the same budget (EPOCHS, default 8) on the JPEG CIFAR-10 data. Both runs
# are resumable: run the script again after a crash. Writes benchmarks/results/prune_resnet56_filters.{md,csv,json}.
# About 2 x EPOCHS x 7 minutes on 2 cores. Run from the repository root after `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
EPOCHS=${EPOCHS:-8}
RUNS=${RUNS:-runs/bench/resnet56_filters}
DATA="$SHARED/data/cifar10-jpeg.tar.gz"
PRETRAINED="$SHARED/models/resnet56-4bfd9763.th"
COMMON=(--model cifar_resnet56 --weights "$PRETRAINED" --data "$DATA" --epochs "$EPOCHS"
        --lr 0.02 --batch-size 128 --schedule cosine --quiet --json)
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }

.venv/bin/torchslim train "${COMMON[@]}" --out "$RUNS/dense" $(resume "$RUNS/dense") | tail -n 1
.venv/bin/torchslim compress --recipe benchmarks/recipes/resnet56_filters.yaml "${COMMON[@]}" \
    --out "$RUNS/filters32" --repeats 3 $(resume "$RUNS/filters32") | tail -n 1

cp "$RUNS/dense/model.pt" "$RUNS/dense_ft${EPOCHS}.pt"
cp "$RUNS/filters32/compressed.pt" "$RUNS/filters32_ft${EPOCHS}.pt"
.venv/bin/torchslim bench --data "$DATA" \
    --model "cifar_resnet56=$PRETRAINED" \
    --model "cifar_resnet56=$RUNS/dense_ft${EPOCHS}.pt" \
    --model "cifar_resnet56=$RUNS/filters32_ft${EPOCHS}.pt" \
    --latency-batch 256 --repeats 20 --out benchmarks/results --stem prune_resnet56_filters
