"""Per-layer sparsity table: what ``secateurs inspect`` shows and ``report.json`` stores."""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from secateurs.core.parametrize import original_name
from secateurs.errors import UsageError
from secateurs.metrics.effective_tensors import effective_tensor, eval_mode, is_conv_or_linear

__all__ = ["layer_table", "render_layer_table"]


def _original_name(name: str) -> str:
    # Accept the storage name of a parametrized tensor too:
    # "conv.parametrizations.weight.original" is "conv.weight" to the user.
    return original_name(name) or name


def _default_names(model: nn.Module) -> list[str]:
    return [
        f"{fqn}.weight" if fqn else "weight"
        for fqn, module in model.named_modules()
        if is_conv_or_linear(module) and getattr(module, "weight", None) is not None
    ]


def _resolve(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, tensor_name = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
        value = effective_tensor(module, tensor_name)
    except AttributeError:
        value = None
    if not isinstance(value, torch.Tensor):
        raise UsageError(f"model has no tensor named {name!r}; use parameter names such as "
                         f"{_default_names(model)[:1] or ['layer.weight']}")
    return value


def layer_table(model: nn.Module, targets_names: list[str] | None = None) -> list[dict[str, Any]]:
    """Lists shape, size and sparsity of each convolution and linear weight, or of given tensors.

    Values are the effective ones: a parametrized (masked) weight is read through its
    parametrization, in eval mode without gradients; the model's modes are restored afterwards.

    Args:
        model: The model.
        targets_names: Tensor names to report, as original names like ``"layer1.0.conv1.weight"``
            (also when the weight is parametrized). ``None`` reports every conv/linear weight in
            module order.

    Returns:
        One dict per tensor with keys ``name`` (str), ``shape`` (list of int), ``numel``,
        ``nonzero`` (int) and ``sparsity`` (float, fraction of zeros).

    Raises:
        UsageError: If a name does not denote a tensor of the model.
    """
    names = _default_names(model) if targets_names is None else [
        _original_name(n) for n in targets_names
    ]
    rows: list[dict[str, Any]] = []
    with eval_mode(model), torch.no_grad():
        for name in names:
            value = _resolve(model, name)
            numel = value.numel()
            nonzero = int(torch.count_nonzero(value))
            rows.append({
                "name": name,
                "shape": list(value.shape),
                "numel": numel,
                "nonzero": nonzero,
                "sparsity": 1.0 - nonzero / numel if numel else 0.0,
            })
    return rows


def render_layer_table(rows: list[dict[str, Any]]) -> str:
    """Renders rows from :func:`layer_table` as a plain-text table with a total line.

    Args:
        rows: Rows as returned by :func:`layer_table`.

    Returns:
        The table as a string (no colours or terminal codes), ending with a newline.
    """
    # Imported here so that the metrics can be imported without paying for rich.
    from rich.console import Console
    from rich.table import Table

    table = Table(show_footer=bool(rows))
    numel_total = sum(int(row["numel"]) for row in rows)
    nonzero_total = sum(int(row["nonzero"]) for row in rows)
    sparsity_total = 1.0 - nonzero_total / numel_total if numel_total else 0.0
    table.add_column("name", footer="total")
    table.add_column("shape")
    table.add_column("numel", justify="right", footer=f"{numel_total:,}")
    table.add_column("nonzero", justify="right", footer=f"{nonzero_total:,}")
    table.add_column("sparsity", justify="right", footer=f"{sparsity_total:.2%}")
    for row in rows:
        table.add_row(
            str(row["name"]),
            "x".join(str(d) for d in row["shape"]),
            f"{int(row['numel']):,}",
            f"{int(row['nonzero']):,}",
            f"{float(row['sparsity']):.2%}",
        )
    buffer = io.StringIO()
    # A wide fixed width keeps long layer names on one line; no colours in the returned text.
    console = Console(file=buffer, width=200, color_system=None, force_terminal=False)
    console.print(table)
    return buffer.getvalue()
