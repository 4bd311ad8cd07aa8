#!/usr/bin/env bash
# The storage goal of issue 16: prune -> quantize-aware fine-tune -> compress, for LeNet-300-100
# (`mlp`) and LeNet-5 on full Fashion-MNIST, sized for a 2-core CPU (a few epochs per stage).
#   OMP_NUM_THREADS=1 bash benchmarks/compress/run_cpu.sh [OUT]     (then: python benchmarks/compress/collect.py OUT)
# Stages per model (each skipped when its report exists, so the script resumes):
#   1. dense    secateurs train                                   (the accuracy reference)
#   2. pruned   gmp from the dense weights: per-layer sparsities from one global magnitude threshold
#               (allocation global), inside a layer the same count per output neuron (scope group)
#   3. quant    quantize-aware fine-tune: dpp from the pruned weights with joint B-bit quantization;
#               its groups are the same rows, its logits start from the weights' magnitudes, noise 0
#               and a frozen logit rate keep exactly the pruned mask, so only the weights learn the grid
#   4. compress secateurs shrink --compress (lossless: the codes of the quantized run, fp32 biases)
set -euo pipefail
OUT=${1:-runs/bench-compress}
SEC=(python -c "import sys; from secateurs.cli.main import main; sys.exit(main(sys.argv[1:]))")
COMMON=(--data fashion-mnist --device cpu)

run() {  # run NAME ARGS... (skipped when its report exists)
  local name=$1; shift
  [ -f "$OUT/$name/report.json" ] && return 0
  rm -rf "${OUT:?}/$name"
  "${SEC[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1 || { echo "FAILED $name (see $OUT/$name.log)"; return 1; }
}
compress() {  # compress RUN (skipped when done)
  [ -f "$OUT/$1-compressed/report.json" ] && return 0
  rm -rf "${OUT:?}/$1-compressed"
  "${SEC[@]}" shrink "$OUT/$1" --out "$OUT/$1-compressed" --compress > "$OUT/$1-compressed.log" 2>&1
}
pipeline() {  # pipeline MODEL SPARSITY BITS DENSE_EPOCHS PRUNE_EPOCHS QUANT_EPOCHS
  local m=$1 s=$2 b=$3
  run "$m-dense" train --model "$m" "${COMMON[@]}" --epochs "$4"
  run "$m-gmp$s" prune --model "$m" "${COMMON[@]}" --method gmp --from "$OUT/$m-dense" --include '*weight' \
      --allocation global --scope group --sparsity "$s" --epochs "$5" --lr 0.02
  run "$m-gmp$s-q$b" prune --model "$m" "${COMMON[@]}" --method dpp --from "$OUT/$m-gmp$s" --include '*weight' \
      --allocation global --sparsity "$s" --quant-bits "$b" -o noise_scale=0 -o logit_lr=1e-12 \
      --epochs "$6" --lr 0.005
  compress "$m-gmp$s-q$b"
}
mkdir -p "$OUT"
# The rows of docs/results.md: mlp as below; lenet5 0.94 as below, and lenet5 0.9 with
#   LENET_SPARSITY=0.9 LENET_PRUNE_EPOCHS=12 LENET_QUANT_EPOCHS=4
pipeline mlp "${MLP_SPARSITY:-0.9}" "${MLP_BITS:-4}" 20 "${MLP_PRUNE_EPOCHS:-10}" "${MLP_QUANT_EPOCHS:-4}"
pipeline lenet5 "${LENET_SPARSITY:-0.94}" "${LENET_BITS:-4}" 20 "${LENET_PRUNE_EPOCHS:-20}" "${LENET_QUANT_EPOCHS:-6}"
