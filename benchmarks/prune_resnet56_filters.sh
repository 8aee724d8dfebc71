#!/usr/bin/env bash
# ResNet-56 with 32 % of every channel group removed and thinned (benchmarks/recipes/
# resnet56_filters.yaml, about 2.1x fewer MACs) against the dense model fine-tuned for the same
# EPOCHS (default 8); about 2 x EPOCHS x 7 minutes on 2 cores.
# Results: benchmarks/results/prune_resnet56_filters.{md,csv,json}.
cd "$(dirname "$0")/.." && exec benchmarks/prune_against_dense.sh cifar_resnet56 \
    "${SHARED:-../shared}/models/resnet56-4bfd9763.th" benchmarks/recipes/resnet56_inner.yaml \
    "${EPOCHS:-8}" prune_resnet56_filters
