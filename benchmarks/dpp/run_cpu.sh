#!/usr/bin/env bash
# DPP against GMP and one-shot magnitude pruning at equal epochs, from scratch, plus DPP with joint
# 8- and 4-bit quantization. CPU-sized stand-in (2-core CPU, no GPU): Fashion-MNIST subsets.
#   OMP_NUM_THREADS=1 bash benchmarks/dpp/run_cpu.sh [OUT]      (then: python benchmarks/dpp/collect.py OUT)
set -euo pipefail
OUT=${1:-runs/bench-dpp}
SEC=(python -c "import sys; from secateurs.cli.main import main; sys.exit(main(sys.argv[1:]))")
LENET=(--model lenet5 --data fashion-mnist --limit-train 20000 --limit-test 5000 --epochs 4 --lr 0.05 --device cpu)
RESNET=(--model resnet20 --data fashion-mnist --limit-train 2000 --limit-test 1000 --epochs 2 --lr 0.1 --device cpu)

run() {  # run NAME ARGS... (skipped when its report exists)
  local name=$1; shift
  [ -f "$OUT/$name/report.json" ] && return 0
  rm -rf "${OUT:?}/$name"
  "${SEC[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1 || echo "FAILED $name (see $OUT/$name.log)"
}
mkdir -p "$OUT"
run lenet5-dense train "${LENET[@]}"
for s in 0.9 0.95; do
  run lenet5-dpp-$s prune "${LENET[@]}" --method dpp --sparsity $s
  run lenet5-gmp-$s prune "${LENET[@]}" --method gmp --sparsity $s
  run lenet5-magnitude-$s prune "${LENET[@]}" --method magnitude --sparsity $s
done
for b in 8 4; do
  run lenet5-dpp-0.9-q$b prune "${LENET[@]}" --method dpp --sparsity 0.9 --quant-bits $b
done
run lenet5-dpp-0.9-q4-channel prune "${LENET[@]}" --method dpp --sparsity 0.9 --quant-bits 4 -o quant_scale=channel
run lenet5-dpp-0.95-q4-channel prune "${LENET[@]}" --method dpp --sparsity 0.95 --quant-bits 4 -o quant_scale=channel
# Ablations: without the fan-in correction of the initial weights; logits 10x faster than the reference.
run lenet5-dpp-0.9-norescale prune "${LENET[@]}" --method dpp --sparsity 0.9 -o rescale_init=false
run lenet5-dpp-0.9-logitlr0.01 prune "${LENET[@]}" --method dpp --sparsity 0.9 -o logit_lr=0.01
# ResNet-20 on CPU is slow (about 1 minute per epoch of 2,000 images here): a smoke-sized stand-in.
run resnet20-dense train "${RESNET[@]}"
run resnet20-dpp-0.9 prune "${RESNET[@]}" --method dpp --sparsity 0.9
run resnet20-gmp-0.9 prune "${RESNET[@]}" --method gmp --sparsity 0.9
