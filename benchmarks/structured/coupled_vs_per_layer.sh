#!/usr/bin/env bash
# Filter pruning by coupled channel groups against per-layer filter masks, on ResNet-20 / Fashion-MNIST
# (10k training images, 5k test images; CPU-sized). Both start from the same dense model and get the same
# 3 epochs; both runs are then shrunk. Usage: bash benchmarks/structured/coupled_vs_per_layer.sh [OUT]
set -euo pipefail
OUT=${1:-runs/coupled-vs-per-layer}
S=${SECATEURS:-secateurs}
DATA=(--data fashion-mnist --limit-train 10000 --limit-test 5000 --device cpu)
$S train --model resnet20 "${DATA[@]}" --epochs 4 --lr 0.05 --out "$OUT/dense" --resume
for method in gmp magnitude; do
  for mode in coupled per-layer; do
    extra=()
    [ "$mode" = per-layer ] && extra=(-o coupled=false)
    $S prune --model resnet20 "${DATA[@]}" --method "$method" --granularity filter --sparsity 0.5 \
      --epochs 3 --lr 0.02 --from "$OUT/dense" "${extra[@]}" --out "$OUT/$method-$mode" --resume
    rm -rf "$OUT/$method-$mode-shrunk"
    $S shrink "$OUT/$method-$mode" --out "$OUT/$method-$mode-shrunk"
  done
done
