#!/usr/bin/env bash
# ResNet-56 with 55 % of the inner filters of every residual block removed and thinned, as Li et
# al. (2017) prune ResNets (benchmarks/recipes/resnet56_inner.yaml, 2.08x fewer MACs; the older
# every-group form is recipes/resnet56_filters.yaml) against the dense model fine-tuned for the
# same EPOCHS (default 8); about 2 x EPOCHS x 7 minutes on 2 cores.
# Results: benchmarks/results/prune_resnet56_filters.{md,csv,json}.
cd "$(dirname "$0")/.." && exec benchmarks/prune_against_dense.sh cifar_resnet56 \
    "${SHARED:-../shared}/models/resnet56-4bfd9763.th" benchmarks/recipes/resnet56_inner.yaml \
    "${EPOCHS:-8}" prune_resnet56_filters
