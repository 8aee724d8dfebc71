#!/usr/bin/env bash
# Fine-tune the pretrained ResNet-20 for one epoch on the JPEG CIFAR-10 train split and record the
# test top-1 in benchmarks/results/finetune_resnet20.json (pretrained: 81.03 %).
# About 3 to 6 minutes on 2 cores. Run from the repository root after `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
mkdir -p benchmarks/results
.venv/bin/torchslim train --model cifar_resnet20 --weights "$SHARED/models/resnet20-12fca82f.th" \
    --data "$SHARED/data/cifar10-jpeg.tar.gz" --epochs 1 --lr 0.02 --batch-size 128 \
    --out runs/finetune_resnet20 --quiet --json "$@" | tail -n 1 > benchmarks/results/finetune_resnet20.tmp
mv benchmarks/results/finetune_resnet20.tmp benchmarks/results/finetune_resnet20.json  # whole or not at all
cat benchmarks/results/finetune_resnet20.json
