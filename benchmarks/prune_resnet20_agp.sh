#!/usr/bin/env bash
# ResNet-20 at 90 % global unstructured sparsity (AGP, benchmarks/recipes/resnet20_agp90.yaml)
# against the dense model fine-tuned for the same EPOCHS (default 15); about 2 x EPOCHS x 3
# minutes on 2 cores. Results: benchmarks/results/prune_resnet20_agp.{md,csv,json}.
cd "$(dirname "$0")/.." && exec benchmarks/prune_against_dense.sh cifar_resnet20 \
    "${SHARED:-../shared}/models/resnet20-12fca82f.th" benchmarks/recipes/resnet20_agp90.yaml \
    "${EPOCHS:-15}" prune_resnet20_agp
