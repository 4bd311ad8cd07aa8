"""Measure the causes issue 14 lists, before (the paper's schedule) and after (the new defaults).

A small in-process run: LeNet-5 on 2,000 Fashion-MNIST training images, a 2-epoch dense model, then
3 epochs (96 steps) of pruning at 95 % per variant, each from a copy of the same dense model
(``pretrained=True``, as ``prune --from``). It prints, per method:

- gibbs: the distinct β values the run used, and the pruned share of the first training sample
  (a trained model hit with a 50 % random mask shows about 0.5 whatever the target);
- cs: the share of gates σ(βs) still between 0.1 and 0.9 at the last search step (the step the fix follows);
- dpp: the overlap of two training draws at the end of the run (kept units in common / k) and the
  agreement of the last training mask with the evaluated one.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/quality/causes.py [DATA_DIR]
"""

from __future__ import annotations

import copy
import sys

import torch

from secateurs.data import build_data
from secateurs.methods import build_method
from secateurs.models import build_model
from secateurs.train import TrainConfig, fit

DATA_DIR = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
SPARSITY = 0.95
PAPER = {
    "gibbs": {"beta_every": "epoch", "beta_scale": "absolute", "anneal_end": 127 / 199, "fix_mask": False},
    "cs": {"harden_fraction": 0.0, "score_init": "constant", "finetune_fraction": 0.25},
    "dpp": {"logit_lr_schedule": "constant", "fix_fraction": 0.0},
}


def _with_probe(method, probe) -> None:
    original = method.on_step

    def on_step(step: int) -> None:
        original(step)
        probe(step)

    method.on_step = on_step


def gibbs(dense, data, options):
    method = build_method("gibbs", sparsity=SPARSITY, **options)
    betas, first = set(), []

    def probe(step: int) -> None:
        masks = method._masks()
        betas.add(round(float(masks[0].beta), 6))
        if not first and masks[0].last_keep is not None:
            total = sum(m.last_keep.numel() for m in masks)
            first.append(1.0 - sum(float(m.last_keep.sum()) for m in masks) / total)

    _with_probe(method, probe)
    result = fit(copy.deepcopy(dense), data.train, config=TrainConfig(epochs=3, lr=0.02), method=method,
                 eval_loader=data.val, pretrained=True)
    return {"distinct_betas": len(betas), "first_sample_sparsity": round(first[0], 3),
            "val_accuracy": round(result.final["accuracy"], 2)}


def cs(dense, data, options):
    method = build_method("cs", sparsity=SPARSITY, **options)
    soft = []

    def probe(step: int) -> None:
        if step == method.search_steps - 1:
            gates = torch.cat([torch.sigmoid(g.beta * g.scores.detach()).flatten() for g in method.gates().values()])
            soft.append(float(((gates > 0.1) & (gates < 0.9)).float().mean()))

    _with_probe(method, probe)
    result = fit(copy.deepcopy(dense), data.train, config=TrainConfig(epochs=3, lr=0.02), method=method,
                 eval_loader=data.val, pretrained=True)
    return {"soft_gates_at_fix": round(soft[0], 3), "val_accuracy": round(result.final["accuracy"], 2)}


def dpp(dense, data, options):
    method = build_method("dpp", sparsity=SPARSITY, metric_samples=0, **options)
    model = copy.deepcopy(dense)
    result = fit(model, data.train, config=TrainConfig(epochs=3, lr=0.02), method=method, eval_loader=data.val,
                 pretrained=True)
    overlap, agree, total = 0.0, 0, 0
    masks = method._masks()
    with torch.no_grad():
        for m in masks:
            a, b = m._sampled() > 0.5, m._sampled() > 0.5  # two draws at the final noise scale
            overlap += float((a & b).sum()) / max(m.k * m.grouping.groups, 1)
            hard = m.grouped_hard() > 0.5
            agree += int((b == hard).sum())
            total += b.numel()
    return {"successive_draw_overlap": round(overlap / len(masks), 3), "last_draw_vs_eval_mask": round(agree / total, 4),
            "val_accuracy": round(result.final["accuracy"], 2)}


def main() -> None:
    torch.manual_seed(0)
    data = build_data("fashion-mnist", data_dir=DATA_DIR, batch_size=64, limit_train=2000, val_fraction=0.2,
                      limit_test=500)
    dense = build_model("lenet5", in_channels=data.in_channels, num_classes=data.num_classes,
                        image_size=data.image_size)
    fit(dense, data.train, config=TrainConfig(epochs=2, lr=0.05))
    for name, measure in (("gibbs", gibbs), ("cs", cs), ("dpp", dpp)):
        for label, options in (("paper", PAPER[name]), ("new defaults", {})):
            print(f"{name:6s} {label:13s} {measure(dense, data, options)}", flush=True)


if __name__ == "__main__":
    main()
