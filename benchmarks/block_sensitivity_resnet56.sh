#!/usr/bin/env bash
# Which residual blocks of the pretrained ResNet-56 matter: each removable block removed alone
# (torchslim sensitivity --granularity block, torchslim.pruning.depth), top-1 on 2,000 images
# of the training split (the depth pruner ranks on training data, never on the test split).
# Writes benchmarks/results/block_sensitivity_resnet56.{md,csv,json,png}. Run from the
# repository root after `make install`; about 8 minutes on one core shared with other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=runs/bench/block_sensitivity_resnet56
RESULTS=benchmarks/results/block_sensitivity_resnet56
export OMP_NUM_THREADS=1
table=$(.venv/bin/torchslim sensitivity --model cifar_resnet56 \
    --weights "$SHARED/models/resnet56-4bfd9763.th" --data "$SHARED/data/cifar10-jpeg.tar.gz" \
    --split train --limit 2000 --granularity block --out "$OUT" | sed '/^written:/d')
for kind in csv json png; do cp "$OUT/sensitivity.$kind" "$RESULTS.$kind.tmp"; done
{
    echo "# ResNet-56: each residual block removed alone"
    echo
    echo "Pretrained ResNet-56 (../shared/models/resnet56-4bfd9763.th), no fine-tuning; top-1 on"
    echo "2,000 images drawn (seeded) from the JPEG CIFAR-10 training split, with one block"
    echo "replaced by the ReLU it ends in. The blocks that downsample (layer2.0, layer3.0) cannot"
    echo "be removed. Produced by \`benchmarks/block_sensitivity_resnet56.sh\`; plot:"
    echo "\`block_sensitivity_resnet56.png\`."
    echo
    echo '```'
    echo "$table"
    echo '```'
} > "$RESULTS.md.tmp"
for kind in csv json png md; do mv "$RESULTS.$kind.tmp" "$RESULTS.$kind"; done
cat "$RESULTS.md"
