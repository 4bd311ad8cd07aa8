"""A tiny LightningModule and data for the Lightning callback's tests (CPU, seconds)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class MLP(nn.Module):
    def __init__(self, features: int = 16, hidden: int = 24, classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class Classifier(pl.LightningModule):
    """Cross-entropy on an MLP; SGD with momentum and weight decay over ``self.parameters()``."""

    def __init__(self, seed: int = 0, lr: float = 0.05, weight_decay: float = 5e-4, schedule: bool = False,
                 return_dict: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.model = MLP()
        self.lr, self.weight_decay, self.schedule, self.return_dict = lr, weight_decay, schedule, return_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        return {"loss": loss} if self.return_dict else loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        if not self.schedule:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - 0.5 * step / total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def loader(batches: int = 4, batch_size: int = 16, seed: int = 1, samples: int | None = None) -> DataLoader:
    """Separable synthetic classes (``samples``, default ``batches * batch_size``), no shuffling (a
    resumed run sees the same batches)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (samples or batches * batch_size,), generator=g)
    centres = torch.randn(4, 16, generator=g)
    x = centres[y] + 0.5 * torch.randn(len(y), 16, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer(epochs: int, callbacks: list, tmp_path=None, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, callbacks=callbacks, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
                      default_root_dir=tmp_path, **kwargs)
