#!/usr/bin/env bash
# Validation cells over several seeds (issue 14, second round): every variant prunes the dense model of
# before_after.sh (LeNet-5, Fashion-MNIST, 10,000 training images of which 10 % are the validation
# split, 4 dense epochs) in EPOCHS epochs, once per seed in SEEDS (the pruning run's seed: data order,
# noise), and the table reports the validation accuracy of each seed and their mean.
#   OMP_NUM_THREADS=1 flock /tmp/secateurs-train.lock bash benchmarks/quality/seeds.sh OUT_DIR VARIANTS
# VARIANTS is a file of lines "NAME METHOD SCOPE [key=value ...]" (options of -o); '#' lines are
# skipped. SPARSITY (default 0.95) may also be given per line as sparsity=S. Writes OUT_DIR/seeds.tsv.
# MODEL, LIMIT (training images), BATCH, DENSE_EPOCHS and EPOCHS change the cell (defaults: lenet5,
# 10000, 64, 4, 6).
set -euo pipefail
OUT=${1:?OUT_DIR}
VARIANTS=${2:?VARIANTS file}
SPARSITY=${SPARSITY:-0.95}
EPOCHS=${EPOCHS:-6}
DENSE_EPOCHS=${DENSE_EPOCHS:-4}
MODEL=${MODEL:-lenet5}
LIMIT=${LIMIT:-10000}
BATCH=${BATCH:-64}
SEEDS=${SEEDS:-0 1}
PY=${PY:-python}
COMMON=(--model "$MODEL" --data fashion-mnist --limit-train "$LIMIT" --val-fraction 0.1 --batch-size "$BATCH" --device cpu)
mkdir -p "$OUT"
if [ ! -f "$OUT/dense/report.json" ]; then
  $PY -m secateurs train "${COMMON[@]}" --seed 0 --epochs "$DENSE_EPOCHS" --lr 0.05 --out "$OUT/dense" >/dev/null
fi
while read -r name method scope rest; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  sparsity=$SPARSITY
  opts=()
  for o in $rest; do
    if [[ "$o" == sparsity=* ]]; then sparsity=${o#sparsity=}; else opts+=(-o "$o"); fi
  done
  for seed in $SEEDS; do
    dir="$OUT/$name/seed$seed"
    if [ ! -f "$dir/report.json" ]; then
      $PY -m secateurs prune "${COMMON[@]}" --seed "$seed" --epochs "$EPOCHS" --lr 0.02 --from "$OUT/dense" \
        --method "$method" --sparsity "$sparsity" --scope "$scope" "${opts[@]}" --out "$dir" >/dev/null </dev/null
    fi
  done
done <"$VARIANTS"
$PY - "$OUT" "$VARIANTS" >"$OUT/seeds.tsv" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for line in open(sys.argv[2]):
    if not line.strip() or line.startswith("#"):
        continue
    name = line.split()[0]
    accs = [json.load(open(r))["accuracy"] for r in sorted((out / name).glob("seed*/report.json"))]
    if accs:
        cells = "\t".join(f"{a:.2f}" for a in accs)
        print(f"{name}\t{sum(accs) / len(accs):.2f}\t{cells}")
PYEOF
cat "$OUT/seeds.tsv"
