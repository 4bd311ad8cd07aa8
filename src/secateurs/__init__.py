"""secateurs: pruning neural networks in PyTorch.

The five-line integration into your own training loop (the README shows one with phases)::

    import secateurs as sc

    method = sc.build_method("gmp", sparsity=0.9)                  # any name from `secateurs list methods`
    method.attach(model, horizon=sc.Horizon(epochs, len(loader)))  # masks enter via parametrizations
    optimizer = torch.optim.SGD(method.param_groups(weight_decay=5e-4), lr=0.1)  # weights + mask state
    # in the step: loss = task_loss + (method.penalty() or 0); ...; optimizer.step(); method.on_step(step)
    masks = method.finalize()                                       # hard masks baked into the weights

Importing secateurs imports torch, but neither initialises CUDA nor imports optional extras
(torchvision, matplotlib, onnx).
"""

from secateurs._version import __version__
from secateurs.core.granularity import Filter, Granularity, Kernel, NofM, Unstructured, parse_granularity
from secateurs.core.masks import MaskSet
from secateurs.core.parametrize import MaskParametrization, squash_
from secateurs.core.targets import Target, select_targets
from secateurs.errors import SecateursError, UsageError
from secateurs.methods import METHODS, Horizon, MethodConfig, Phase, PruningMethod, build_method
from secateurs.structured.load import load_shrunk
from secateurs.train import TrainConfig, evaluate, fit

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
    "load_shrunk",
    "parse_granularity",
    "select_targets",
    "squash_",
]


def __getattr__(name: str) -> object:
    # ``secateurs.load`` was the first name of load_shrunk; "load" alone did not say what it loads.
    if name == "load":
        import warnings

        warnings.warn("secateurs.load is now secateurs.load_shrunk", DeprecationWarning, stacklevel=2)
        return load_shrunk
    raise AttributeError(f"module 'secateurs' has no attribute {name!r}")
