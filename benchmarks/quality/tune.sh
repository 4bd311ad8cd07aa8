#!/usr/bin/env bash
# Validation sweeps for issue 14: settings around the new defaults of dpp and gibbs, with the protocol
# and the dense model of before_after.sh (LeNet-5, Fashion-MNIST, 95 % unstructured, seed 0, scores on
# --val-fraction 0.1 of the training subset, never the test set).
#   OMP_NUM_THREADS=1 flock /tmp/secateurs-bench.lock bash benchmarks/quality/tune.sh OUT_DIR
# Writes OUT_DIR/tune.tsv (variant, validation accuracy, achieved sparsity, seconds).
set -euo pipefail
OUT=${1:-runs/quality-before-after}
SPARSITY=${SPARSITY:-0.95}
EPOCHS=${EPOCHS:-6}
PY=${PY:-python}
COMMON=(--model lenet5 --data fashion-mnist --limit-train 10000 --val-fraction 0.1 --batch-size 64 --device cpu --seed 0)
mkdir -p "$OUT"
if [ ! -f "$OUT/dense/report.json" ]; then
  $PY -m secateurs train "${COMMON[@]}" --epochs 4 --lr 0.05 --out "$OUT/dense" >/dev/null
fi
cell() {  # cell NAME METHOD [SCOPE] -- OPTIONS...
  local name=$1 method=$2 scope=$3; shift 3
  local opts=()
  for o in "$@"; do opts+=(-o "$o"); done
  if [ ! -f "$OUT/$name/report.json" ]; then
    $PY -m secateurs prune "${COMMON[@]}" --epochs "$EPOCHS" --lr 0.02 --from "$OUT/dense" --method "$method" \
      --sparsity "$SPARSITY" --scope "$scope" "${opts[@]}" --out "$OUT/$name" >/dev/null
  fi
  $PY - "$OUT/$name/report.json" "$name" >>"$OUT/tune.tsv" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}\t{r['accuracy']:.2f}\t{r['achieved_sparsity']:.4f}\t{r['train_seconds']:.0f}")
PYEOF
}
: >"$OUT/tune.tsv"
# Validation sweeps around the new defaults (issue 14): which settings the defaults were chosen from.
cell dpp-fix-0.4 dpp group fix_fraction=0.4
cell dpp-logit-std-2 dpp group logit_init_std=2.0
cell dpp-logit-lr-3e-4 dpp group logit_lr=0.0003
cell dpp-noise-0 dpp group noise_scale=0.0
cell gibbs-anneal-0.5 gibbs tensor anneal_end=0.5
cell gibbs-start-100 gibbs tensor beta_start=100
cell gibbs-end-1e4 gibbs tensor beta_end=10000
cell cs-harden-0.1 cs tensor harden_fraction=0.1
cell cs-harden-0.4 cs tensor harden_fraction=0.4
cell cs-finetune-0.65 cs tensor finetune_fraction=0.65
