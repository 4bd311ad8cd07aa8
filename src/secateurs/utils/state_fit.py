"""Load a state dict into a model only when it fits exactly, with one readable line when it does not.

``nn.Module.load_state_dict`` reports a mismatch as a multi-line RuntimeError listing every key; the
readers of our files (shrunk models, compressed models) want a ``UsageError`` that names the file and
the first problem, raised before any weight of the model is changed.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from secateurs.errors import UsageError


def load_fitting_state(model: nn.Module, state: Mapping[str, Tensor], *, mismatch: str) -> None:
    """Copy ``state`` into ``model`` if both have the same keys and shapes, else raise ``UsageError``.

    Args:
        model: the module to fill.
        state: the tensors read from a file.
        mismatch: the start of the error line, e.g. ``"the weights in F do not fit the model"``; the
            first problem found (an unexpected key, a missing key or a shape) is appended in brackets.
    """
    own = model.state_dict()
    problems = [f"unexpected {k}" for k in state if k not in own]
    problems += [f"missing {k}" for k in own if k not in state]
    problems += [f"{k} is {tuple(v.shape)}, the model has {tuple(own[k].shape)}"
                 for k, v in state.items() if k in own and own[k].shape != v.shape]
    if problems:
        raise UsageError(f"{mismatch} ({problems[0]})")
    model.load_state_dict(state)
