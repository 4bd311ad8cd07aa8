from __future__ import annotations

import pytest
import torch

from secateurs.data import Augment, TensorLoader, random_crop, random_hflip
from secateurs.errors import UsageError


def _data(n: int = 50, c: int = 1, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    # Every image is constant and equal to its index, so a batch tells which samples it holds.
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, c, size, size).clone()
    return x, torch.arange(n)


def _epoch(loader: TensorLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_same_seed_and_epoch_give_identical_batches():
    x, y = _data()
    aug = Augment(crop_padding=2, flip=True)
    a = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3, augment=aug)
    b = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3, augment=aug)
    _epoch(a, 5)  # iterating other epochs first must not matter
    for (xa, ya), (xb, yb) in zip(_epoch(a, 2), _epoch(b, 2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Iterating the same epoch again repeats it.
    assert all(torch.equal(p[0], q[0]) for p, q in zip(_epoch(a, 2), list(a), strict=True))


def test_different_epochs_and_seeds_give_different_orders():
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=50, shuffle=True, seed=0)
    orders = {tuple(_epoch(loader, e)[0][1].tolist()) for e in range(4)}
    assert len(orders) == 4
    other = TensorLoader(x, y, batch_size=50, shuffle=True, seed=1)
    assert _epoch(other, 0)[0][1].tolist() != _epoch(loader, 0)[0][1].tolist()


@pytest.mark.parametrize("batch_size", [1, 7, 50, 64])
def test_every_sample_exactly_once_per_epoch(batch_size):
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=batch_size, shuffle=True, seed=9)
    batches = _epoch(loader, 1)
    assert len(batches) == len(loader) == -(-50 // batch_size)
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(50))
    assert all(torch.equal(xb[:, 0, 0, 0], yb.float()) for xb, yb in batches)  # x and y stay paired


def test_drop_last():
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=8, shuffle=True, drop_last=True)
    batches = _epoch(loader, 0)
    assert len(loader) == len(batches) == 6 and all(len(yb) == 8 for _, yb in batches)
    assert len(TensorLoader(x, y, batch_size=64, drop_last=True)) == 0


def test_unshuffled_loader_keeps_order():
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=16)
    assert torch.cat([yb for _, yb in _epoch(loader, 3)]).tolist() == list(range(50))


def test_crop_is_a_shifted_copy():
    img = torch.arange(2 * 6 * 6, dtype=torch.float32).view(1, 2, 6, 6)
    batch = img.expand(4, 2, 6, 6).clone()
    pad = 2
    offsets = torch.tensor([[2, 2], [0, 0], [4, 1], [3, 4]])
    fill = torch.tensor([-1.0, -2.0])
    out = random_crop(batch, pad, offsets, fill)
    assert out.shape == batch.shape
    for b, (dy, dx) in enumerate(offsets.tolist()):
        sy, sx = dy - pad, dx - pad  # out[i, j] = img[i + sy, j + sx]
        for i in range(6):
            for j in range(6):
                si, sj = i + sy, j + sx
                expected = img[0, :, si, sj] if 0 <= si < 6 and 0 <= sj < 6 else fill
                assert torch.equal(out[b, :, i, j], expected), (b, i, j)
    assert torch.equal(out[0], img[0])  # centre offset: unchanged


def test_flip_mirrors_selected_images():
    batch = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = random_hflip(batch, torch.tensor([True, False]))
    assert out.shape == batch.shape
    assert torch.equal(out[0], batch[0].flip(-1)) and torch.equal(out[1], batch[1])


def test_augmented_loader_keeps_shapes_and_varies():
    x = torch.randn(40, 3, 32, 32)
    y = torch.arange(40)
    loader = TensorLoader(x, y, batch_size=40, augment=Augment(crop_padding=4, flip=True))
    (xa, _), = _epoch(loader, 0)
    (xb, _), = _epoch(loader, 1)
    assert xa.shape == x.shape and not torch.equal(xa, x) and not torch.equal(xa, xb)


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(UsageError):
        TensorLoader(x, y, batch_size=0)
    with pytest.raises(UsageError):
        TensorLoader(x, y[:3], batch_size=4)
    with pytest.raises(UsageError):
        Augment(crop_padding=-1)
