#!/usr/bin/env bash
# ResNet-20 at 90 % global unstructured sparsity (AGP) against the dense model fine-tuned with
# the same budget (EPOCHS, default 15) on the JPEG CIFAR-10 data. Both runs are resumable: run
# the script again after a crash. Writes benchmarks/results/prune_resnet20_agp.{md,csv,json}.
# About 2 x EPOCHS x 3 minutes on 2 cores. Run from the repository root after `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
EPOCHS=${EPOCHS:-15}
RUNS=${RUNS:-runs/bench/resnet20_agp}
DATA="$SHARED/data/cifar10-jpeg.tar.gz"
PRETRAINED="$SHARED/models/resnet20-12fca82f.th"
COMMON=(--model cifar_resnet20 --weights "$PRETRAINED" --data "$DATA" --epochs "$EPOCHS"
        --lr 0.02 --batch-size 128 --schedule cosine --quiet --json)
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }

.venv/bin/torchslim train "${COMMON[@]}" --out "$RUNS/dense" $(resume "$RUNS/dense") | tail -n 1
.venv/bin/torchslim compress --recipe benchmarks/recipes/resnet20_agp90.yaml "${COMMON[@]}" \
    --out "$RUNS/agp90" --repeats 3 $(resume "$RUNS/agp90") | tail -n 1

cp "$RUNS/dense/model.pt" "$RUNS/dense_ft${EPOCHS}.pt"
cp "$RUNS/agp90/compressed.pt" "$RUNS/agp90_ft${EPOCHS}.pt"
.venv/bin/torchslim bench --data "$DATA" \
    --model "cifar_resnet20=$PRETRAINED" \
    --model "cifar_resnet20=$RUNS/dense_ft${EPOCHS}.pt" \
    --model "cifar_resnet20=$RUNS/agp90_ft${EPOCHS}.pt" \
    --latency-batch 256 --repeats 20 --out benchmarks/results --stem prune_resnet20_agp
