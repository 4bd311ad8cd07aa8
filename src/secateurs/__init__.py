"""secateurs: pruning neural networks in PyTorch.

The five-line integration into your own training loop (the README shows one with phases)::

    import secateurs as sc

    method = sc.build_method("gmp", sparsity=0.9)                  # any name from `secateurs list methods`
    method.attach(model, horizon=sc.Horizon(epochs, len(loader)))  # masks enter via parametrizations
    optimizer = torch.optim.SGD(method.param_groups(weight_decay=5e-4), lr=0.1)  # weights + mask state
    # in the step: loss = task_loss + (method.penalty() or 0); ...; optimizer.step(); method.on_step(step)
    masks = method.finalize()                                       # hard masks baked into the weights

``import secateurs`` is light: the public names below are imported on first use (module
``__getattr__``), so the command line answers ``--help`` and ``list`` without importing torch. Using
any of them imports torch, but neither initialises CUDA nor imports optional extras (torchvision,
matplotlib, onnx).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from secateurs._version import __version__
from secateurs.errors import SecateursError, UsageError

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from secateurs.core.granularity import Filter, Granularity, Kernel, NofM, Unstructured, parse_granularity
    from secateurs.core.masks import MaskSet
    from secateurs.core.parametrize import MaskParametrization, squash_
    from secateurs.core.targets import Target, select_targets
    from secateurs.export.compressed import load_compressed, save_compressed
    from secateurs.methods import METHODS, Horizon, MethodConfig, Phase, PruningMethod, build_method
    from secateurs.structured.load import load_shrunk
    from secateurs.train import TrainConfig, evaluate, fit

#: public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    **dict.fromkeys(("Filter", "Granularity", "Kernel", "NofM", "Unstructured", "parse_granularity"),
                    "secateurs.core.granularity"),
    "MaskSet": "secateurs.core.masks",
    **dict.fromkeys(("MaskParametrization", "squash_"), "secateurs.core.parametrize"),
    **dict.fromkeys(("Target", "select_targets"), "secateurs.core.targets"),
    **dict.fromkeys(("METHODS", "Horizon", "MethodConfig", "Phase", "PruningMethod", "build_method"),
                    "secateurs.methods"),
    "load_shrunk": "secateurs.structured.load",
    **dict.fromkeys(("load_compressed", "save_compressed"), "secateurs.export.compressed"),
    **dict.fromkeys(("TrainConfig", "evaluate", "fit"), "secateurs.train"),
}

__all__ = [
    "METHODS",
    "Filter",
    "Granularity",
    "Horizon",
    "Kernel",
    "MaskParametrization",
    "MaskSet",
    "MethodConfig",
    "NofM",
    "Phase",
    "PruningMethod",
    "SecateursError",
    "Target",
    "TrainConfig",
    "Unstructured",
    "UsageError",
    "__version__",
    "build_method",
    "evaluate",
    "fit",
    "load_compressed",
    "load_shrunk",
    "parse_granularity",
    "save_compressed",
    "select_targets",
    "squash_",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    # ``secateurs.load`` was the first name of load_shrunk; "load" alone did not say what it loads.
    if name == "load":
        import warnings

        warnings.warn("secateurs.load is now secateurs.load_shrunk", DeprecationWarning, stacklevel=2)
        return __getattr__("load_shrunk")
    raise AttributeError(f"module 'secateurs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
