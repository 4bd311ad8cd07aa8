#!/usr/bin/env bash
# Each fix of issue 14 in isolation: one cell (LeNet-5, Fashion-MNIST, 95 % unstructured, seed 0) per
# variant, every variant pruning the same trained dense model with the same budget. Scores are on a
# validation split carved from the training subset (--val-fraction 0.1): the defaults were chosen here,
# never on the test set.
#   OMP_NUM_THREADS=1 flock /tmp/secateurs-bench.lock bash benchmarks/quality/before_after.sh OUT_DIR
# Writes OUT_DIR/before_after.tsv (variant, validation accuracy, achieved sparsity, seconds).
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
  $PY - "$OUT/$name/report.json" "$name" >>"$OUT/before_after.tsv" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}\t{r['accuracy']:.2f}\t{r['achieved_sparsity']:.4f}\t{r['train_seconds']:.0f}")
PYEOF
}
: >"$OUT/before_after.tsv"
PAPER_GIBBS=(beta_every=epoch beta_scale=absolute anneal_end=0.6382 fix_mask=false)
cell gmp-tensor gmp tensor
cell gmp-group gmp group
cell gibbs-0-paper gibbs tensor "${PAPER_GIBBS[@]}"
cell gibbs-1-per-step gibbs tensor beta_every=step beta_scale=absolute anneal_end=0.6382 fix_mask=false
cell gibbs-2-layer-scale gibbs tensor beta_every=step beta_scale=layer anneal_end=0.6382 fix_mask=false
cell gibbs-3-fixed-mask gibbs tensor
cell cs-0-before cs tensor harden_fraction=0 score_init=constant finetune_fraction=0.25
cell cs-1-harden cs tensor score_init=constant finetune_fraction=0.25
cell cs-2-magnitude-init cs tensor finetune_fraction=0.25
cell cs-3-finetune-half cs tensor
cell dpp-0-before dpp group logit_lr_schedule=constant fix_fraction=0
cell dpp-1-lr-schedule dpp group fix_fraction=0
cell dpp-2-fixed-top-k dpp group
