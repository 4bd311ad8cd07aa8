"""The one way a mask enters forward: FixedMask parametrizations, gradients, squash_ and names."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.core.parametrize import (
    FixedMask,
    MaskParametrization,
    attach_,
    find_parametrizations,
    original_name,
    split_name,
    squash_,
)

GRANULARITIES = [Unstructured(), Kernel(), Filter(), NofM(2, 4)]


def random_unit_mask(gran, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    if isinstance(gran, NofM):
        # A valid 2:4 pattern: keep the 2 largest random scores of each block.
        from secateurs.core.selection import select_per_group

        return select_per_group(torch.rand(shape, generator=g), gran, 0.5)
    mask = torch.rand(gran.unit_shape(shape), generator=g) < 0.5
    mask.reshape(-1)[0] = True
    mask.reshape(-1)[-1] = False
    return mask


def masked_cnn(make_cnn, gran, names=("conv1.weight", "conv2.weight", "fc1.weight"), seed=0):
    model = make_cnn(seed)
    masks = {}
    for i, name in enumerate(names):
        shape = model.get_parameter(name).shape
        p = FixedMask(gran, shape)
        p.set_(random_unit_mask(gran, shape, seed + i))
        attach_(model, name, p)
        masks[name] = p.mask.clone()
    return model, masks


@pytest.mark.parametrize("gran", GRANULARITIES, ids=str)
def test_forward_zeroes_exactly_the_pruned_elements(make_cnn, gran):
    model, masks = masked_cnn(make_cnn, gran)
    for name, unit_mask in masks.items():
        module_name, param = split_name(name)
        module = model.get_submodule(module_name)
        original = module.parametrizations[param].original
        effective = getattr(module, param)
        full = gran.expand(unit_mask, original.shape)
        assert torch.equal(effective, original * full.to(original.dtype))
        assert torch.all(effective[~full] == 0)
        assert torch.all(effective[full] == original[full])


def test_fixed_mask_starts_dense_and_set_replaces_in_place():
    p = FixedMask(Kernel(), torch.Size((3, 4, 3, 3)))
    assert p.mask.shape == (3, 4) and p.mask.dtype == torch.bool and p.mask.all()
    buf = p.mask
    p.set_(torch.tensor([1, 0, 1, 0] * 3).reshape(12))  # any shape with the right numel, any dtype
    assert p.mask is buf and p.mask.dtype == torch.bool
    assert p.mask.tolist() == [[True, False, True, False]] * 3
    w = torch.randn(3, 4, 3, 3)
    hard = p.hard_mask(w)
    assert torch.equal(hard, p.mask)
    hard.fill_(False)
    assert p.mask.any()  # hard_mask returns a copy


def test_forward_of_parametrization_module_directly():
    p = FixedMask(Filter(), torch.Size((4, 2)))
    p.set_(torch.tensor([True, False, False, True]))
    w = torch.arange(1.0, 9.0).reshape(4, 2)
    out = p(w)
    assert out.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [7.0, 8.0]]
    assert out.dtype == w.dtype
    assert p(w.double()).dtype == torch.float64


@pytest.mark.parametrize("gran", GRANULARITIES, ids=str)
def test_gradients_flow_only_through_kept_entries(make_cnn, make_image_batches, gran):
    model, masks = masked_cnn(make_cnn, gran)
    reference = make_cnn(0)  # same init, unmasked, weights multiplied by the masks by hand
    with torch.no_grad():
        for name, m in masks.items():
            reference.get_parameter(name).mul_(gran.expand(m, reference.get_parameter(name).shape))
    x, y = make_image_batches(1)[0]
    for mdl in (model, reference):
        mdl.train()
        nn.functional.cross_entropy(mdl(x), y).backward()
    for name, m in masks.items():
        module_name, param = split_name(name)
        original = model.get_submodule(module_name).parametrizations[param].original
        full = gran.expand(m, original.shape)
        assert original.grad is not None
        assert torch.all(original.grad[~full] == 0)
        assert original.grad[full].abs().sum() > 0
        # d loss / d original = mask * d loss / d effective weight.
        ref_grad = reference.get_parameter(name).grad
        torch.testing.assert_close(original.grad, ref_grad * full, rtol=1e-5, atol=1e-6)


def test_sgd_never_moves_pruned_entries_of_the_effective_weight(make_mlp, make_vector_batches):
    model = make_mlp(0)
    p = FixedMask(Unstructured(), model.fc1.weight.shape)
    p.set_(random_unit_mask(Unstructured(), model.fc1.weight.shape, 3))
    attach_(model, "fc1.weight", p)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.fc1.parametrizations.weight.original.detach().clone()
    for x, y in make_vector_batches(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    after = model.fc1.parametrizations.weight.original.detach()
    assert torch.equal(after[~p.mask], before[~p.mask])
    assert not torch.equal(after[p.mask], before[p.mask])
    assert torch.all(model.fc1.weight[~p.mask] == 0)


@pytest.mark.parametrize("gran", GRANULARITIES, ids=str)
def test_squash_restores_plain_keys_zero_weights_and_same_outputs(make_cnn, make_image_batches, gran):
    plain_keys = list(make_cnn(0).state_dict())
    model, masks = masked_cnn(make_cnn, gran)
    keys = list(model.state_dict())
    assert any("parametrizations" in k for k in keys)
    assert "conv1.parametrizations.weight.original" in keys
    assert "conv1.parametrizations.weight.0.mask" in keys
    x, _ = make_image_batches(1)[0]
    model.eval()
    with torch.no_grad():
        before = model(x)
    squash_(model)
    assert list(find_parametrizations(model)) == []
    assert sorted(model.state_dict()) == sorted(plain_keys)
    for name, m in masks.items():
        w = model.get_parameter(name)
        assert isinstance(w, nn.Parameter)
        full = gran.expand(m, w.shape)
        assert torch.all(w[~full] == 0)
        assert torch.all(w[full] != 0)
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # The squashed state dict loads into a fresh plain model.
    fresh = make_cnn(5)
    fresh.load_state_dict(model.state_dict())


def test_squash_keeps_parameter_identity_for_optimizers(make_mlp):
    model = make_mlp(0)
    attach_(model, "fc2.weight", FixedMask(Filter(), model.fc2.weight.shape))
    original = model.fc2.parametrizations.weight.original
    squash_(model)
    assert model.fc2.weight is original


def test_state_dict_round_trip_of_masked_model(make_cnn):
    model, masks = masked_cnn(make_cnn, Kernel())
    fresh, _ = masked_cnn(make_cnn, Kernel(), seed=10)
    fresh.load_state_dict(model.state_dict())
    for name, p in find_parametrizations(fresh):
        assert torch.equal(p.mask, masks[name])


def test_attaching_twice_raises(make_mlp):
    model = make_mlp(0)
    attach_(model, "fc1.weight", FixedMask(Unstructured(), model.fc1.weight.shape))
    with pytest.raises(ValueError, match="fc1.weight"):
        attach_(model, "fc1.weight", FixedMask(Unstructured(), model.fc1.weight.shape))
    # After squashing, a new mask may be attached.
    squash_(model)
    attach_(model, "fc1.weight", FixedMask(Unstructured(), model.fc1.weight.shape))


def test_find_parametrizations_names_original_weights(make_cnn):
    model, masks = masked_cnn(make_cnn, Filter())
    found = dict(find_parametrizations(model))
    assert set(found) == set(masks)
    assert all(isinstance(p, MaskParametrization) for p in found.values())


def test_find_parametrizations_on_a_bare_module():
    lin = nn.Linear(4, 4)
    attach_(lin, "weight", FixedMask(Unstructured(), lin.weight.shape))
    assert [n for n, _ in find_parametrizations(lin)] == ["weight"]
    squash_(lin)
    assert isinstance(lin.weight, nn.Parameter)


def test_squash_ignores_other_parametrizations(make_mlp):
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    model = make_mlp(0)
    torch.nn.utils.parametrize.register_parametrization(model.fc3, "weight", Double())
    attach_(model, "fc1.weight", FixedMask(Unstructured(), model.fc1.weight.shape))
    assert [n for n, _ in find_parametrizations(model)] == ["fc1.weight"]
    squash_(model)
    assert torch.nn.utils.parametrize.is_parametrized(model.fc3, "weight")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fc1.weight", "fc1.weight"),
        ("weight", "weight"),
        ("layer1.0.conv1.parametrizations.weight.original", "layer1.0.conv1.weight"),
        ("conv.parametrizations.weight.original", "conv.weight"),
        ("parametrizations.weight.original", "weight"),
        ("conv.parametrizations.weight.0.scores", None),
        ("conv.parametrizations.weight.0.logits", None),
        ("conv.parametrizations.weight.original.extra", None),
        ("bn.running_mean", "bn.running_mean"),
    ],
)
def test_original_name(name, expected):
    assert original_name(name) == expected


def test_original_name_maps_every_named_parameter(make_cnn):
    model, _ = masked_cnn(make_cnn, Unstructured())
    plain = dict(make_cnn(0).named_parameters())
    mapped = [original_name(n) for n, _ in model.named_parameters()]
    assert sorted(m for m in mapped if m is not None) == sorted(plain)


def test_split_name():
    assert split_name("layer1.conv.weight") == ("layer1.conv", "weight")
    assert split_name("weight") == ("", "weight")


def test_deepcopy_of_masked_model_is_independent(make_mlp):
    model = make_mlp(0)
    p = FixedMask(Unstructured(), model.fc1.weight.shape)
    attach_(model, "fc1.weight", p)
    clone = copy.deepcopy(model)
    p.set_(torch.zeros_like(p.mask))
    assert dict(find_parametrizations(clone))["fc1.weight"].mask.all()
