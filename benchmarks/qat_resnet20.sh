#!/usr/bin/env bash
# Quantization-aware training of the pretrained ResNet-20 on the JPEG CIFAR-10 data, 10 epochs
# each, beside the fp32 model fine-tuned for the same 10 epochs: W8A8 (observer ranges), LSQ
# W4A4, DoReFa W4A4 and PACT W4A4 (benchmarks/recipes/resnet20_qat_*.yaml), and W8A8 and LSQ
# W4A4 again distilling from the fine-tuned fp32 model (Hinton KD, T=4), and W8A8 trained in
# fp32 for 5 epochs before 5 of quantization-aware training (w8a8_late); and, for reference,
# the fine-tuned fp32 model post-training quantized (fp32_ptq, int8 in ONNX Runtime). Two
# lanes run side by side, one thread each; every run is resumable (run the script again after
# a crash).
# Writes runs/bench/qat_resnet20/<name>/ and, at the end, benchmarks/results/qat_resnet20.{md,json}
# (benchmarks/qat_summary.py). Run from the repository root after `make install`.
# TRAIN_ARGS: more training options for every run, e.g. TRAIN_ARGS='--device cuda --no-amp'.
# FP32: the fp32 run the _kd runs distil from (default fp32; on a GPU, FP32=fp32_cuda with the
# run fp32_cuda first, so that teacher and student trained on the same device).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
RUNS=runs/bench/qat_resnet20
EPOCHS=${EPOCHS:-10}
COMMON=(--model cifar_resnet20 --weights "$SHARED/models/resnet20-12fca82f.th"
        --data "$SHARED/data/cifar10-jpeg.tar.gz" --epochs "$EPOCHS" --lr 0.02 --batch-size 128
        --schedule cosine --quiet --json ${TRAIN_ARGS:-})
export OMP_NUM_THREADS=1
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }
qat() {  # <recipe>[_kd]: _kd distills from the fp32 model fine-tuned here (run fp32 first)
    local recipe=${1%_kd} kd=()
    [ "$recipe" != "$1" ] && kd=(--teacher cifar_resnet20
                                 --teacher-weights "$RUNS/${FP32:-fp32}/model.pt")
    .venv/bin/torchslim compress --recipe "benchmarks/recipes/resnet20_qat_$recipe.yaml" \
        "${COMMON[@]}" "${kd[@]}" --out "$RUNS/$1" --repeats 3 --latency-batch 64 \
        $(resume "$RUNS/$1") | tail -n 1 > "$RUNS/$1.tmp" && mv "$RUNS/$1.tmp" "$RUNS/$1.json"
}
run() {  # one run by name: fp32, or a recipe benchmarks/recipes/resnet20_qat_<name>.yaml
         # (<name>_kd: the same recipe with the fine-tuned fp32 model as teacher)
    [ -s "$RUNS/$1.json" ] && return 0  # done
    if [ "$1" = fp32_ptq ]; then  # the fine-tuned fp32 model post-training quantized (W8A8
        # min/max ranges, 1,000 training images), int8 in ONNX Runtime: a reference for QAT
        .venv/bin/torchslim quantize --model cifar_resnet20 --weights "$RUNS/fp32/model.pt" \
            --data "$SHARED/data/cifar10-jpeg.tar.gz" --observer minmax --threads 1 \
            --repeats 3 --quiet --json --out "$RUNS/$1" \
            | tail -n 1 > "$RUNS/$1.tmp" && mv "$RUNS/$1.tmp" "$RUNS/$1.json"
    elif [ "${1%%_*}" = fp32 ]; then  # fp32, or fp32_<tag> (the same run again, e.g. on a GPU)
        .venv/bin/torchslim train "${COMMON[@]}" --out "$RUNS/$1" $(resume "$RUNS/$1") \
            | tail -n 1 > "$RUNS/$1.tmp" && mv "$RUNS/$1.tmp" "$RUNS/$1.json"
    else
        qat "$1"
    fi
}
lane_a() { run lsq_w4a4; run fp32; run pact_w4a4; run lsq_w4a4_kd; run fp32_ptq; }
lane_b() { run w8a8; run dorefa_w4a4; run w8a8_kd; run w8a8_late; }
mkdir -p "$RUNS"
# Run names as arguments run those, one after the other (e.g. `qat_resnet20.sh w8a8 fp32` on
# one core while another command uses the other); LANES=a (or b) runs one lane alone.
if [ $# -gt 0 ]; then
    for name in "$@"; do run "$name"; done
else
    case "${LANES:-ab}" in
        a) lane_a ;;
        b) lane_b ;;
        *) lane_a & a=$!; lane_b & b=$!
           wait "$a"; wait "$b" ;;  # a failed lane fails the script
    esac
fi
.venv/bin/python benchmarks/qat_summary.py "$RUNS"
