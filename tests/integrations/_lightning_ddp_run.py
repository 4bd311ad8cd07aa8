"""Run by test_lightning_ddp.py: fit the tiny MLP with SecateursPruning under Lightning's DDP strategy
on 2 CPU processes (gloo), then write what both ranks ended with (rank 0 writes ``OUT/result.json``).

Lightning's ``ddp`` strategy starts rank 1 by running this script again (with ``LOCAL_RANK=1``). Each
rank trains on its half of every global batch in a fixed order (rank r takes samples r, r+2, ...;
Lightning's own distributed sampler would shuffle), so one process on the same global batches is the
reference.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the helpers

from integrations._lightning_helpers import Classifier, loader  # noqa: E402

from secateurs.integrations.lightning import SecateursPruning  # noqa: E402

METHODS = {"gmp": {}, "continuous-sparsification": {}}


def sharded_loader() -> DataLoader:
    """This rank's half of the 64 samples, 8 per batch (a global batch of 16), never shuffled."""
    data = loader(batch_size=16, samples=64).dataset
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DataLoader(data, batch_size=8, sampler=DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    result = {}
    for name, options in METHODS.items():
        module = Classifier(schedule=True)
        pruning = SecateursPruning(name, sparsity=0.75, submodule="model", **options)
        trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", callbacks=[pruning],
                             logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, use_distributed_sampler=False)
        trainer.fit(module, sharded_loader())
        flat = torch.cat([module.model.get_parameter(k).detach().flatten() for k in sorted(pruning.masks)]
                         + [p.detach().flatten() for p in module.parameters()])
        both = trainer.strategy.all_gather(flat)  # (2, n): every rank's final weights, masks baked in
        if trainer.is_global_zero:
            result[name] = {"ranks_equal": bool(torch.equal(both[0], both[1])),
                            "weights": both[0].tolist(),
                            "zeros": {k: int((module.model.get_parameter(k) == 0).sum()) for k in pruning.masks},
                            "numel": {k: module.model.get_parameter(k).numel() for k in pruning.masks}}
    if result:
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
