#!/usr/bin/env bash
# The benchmark table for the pretrained CIFAR ResNets on the JPEG CIFAR-10 test split.
# Writes benchmarks/results/pretrained_cifar.{md,csv,json}. Run from the repository root after
# `make install`; SHARED defaults to ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
.venv/bin/torchslim bench --data "$SHARED/data/cifar10-jpeg.tar.gz" \
    --model "cifar_resnet20=$SHARED/models/resnet20-12fca82f.th" \
    --model "cifar_resnet56=$SHARED/models/resnet56-4bfd9763.th" \
    --latency-batch 256 --repeats 20 --out benchmarks/results --stem pretrained_cifar "$@"
