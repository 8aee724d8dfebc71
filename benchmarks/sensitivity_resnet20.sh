#!/usr/bin/env bash
# Pruning sensitivity of the pretrained ResNet-20: each conv/linear weight pruned alone at 10 %
# to 90 %, element-wise and by filters, evaluated on 1,000 random JPEG CIFAR-10 test images.
# Writes benchmarks/results/sensitivity_resnet20.{csv,json,png}; about 20 minutes on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=runs/bench/sensitivity_resnet20
.venv/bin/torchslim sensitivity --model cifar_resnet20 \
    --weights "$SHARED/models/resnet20-12fca82f.th" --data "$SHARED/data/cifar10-jpeg.tar.gz" \
    --granularity element filter --limit 1000 --out "$OUT" "$@"
for kind in csv json png; do cp "$OUT/sensitivity.$kind" "benchmarks/results/sensitivity_resnet20.$kind"; done
