"""Keeping a model's own caches out of a traced forward pass.

Some models memoise tensors in plain attributes during ``forward``: LeViT keeps its gathered
attention biases in ``attention_bias_cache`` in eval mode. A forward pass run with gradients enabled
(as channel tracing must) leaves non-leaf tensors there, and a model holding non-leaf tensors can
no longer be deep-copied. :func:`preserved_module_caches` restores every such container afterwards,
so tracing leaves the model as it found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["preserved_module_caches"]

# nn.Module's own bookkeeping (parameters, buffers, submodules, hooks) is not a cache.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


@contextmanager
def preserved_module_caches(model: nn.Module) -> Iterator[None]:
    """Restores the dict and list attributes of every module, and their contents, on exit.

    Args:
        model: The model whose forward pass runs inside the context.
    """
    saved: list[tuple[nn.Module, str, dict | list, dict | list]] = []
    for module in model.modules():
        for key, value in vars(module).items():
            if key not in _MODULE_INTERNALS and isinstance(value, (dict, list)):
                saved.append((module, key, value, value.copy()))
    try:
        yield
    finally:
        for module, key, container, contents in saved:
            container.clear()
            if isinstance(container, dict):
                container.update(contents)
            else:
                container.extend(contents)
            # A mode switch inside the pass may have bound a new container (LeViT's train()).
            vars(module)[key] = container
