"""The model zoo used by the CLI, benchmarks and examples; the library itself is model-agnostic.

Every model follows the data (``in_channels``, ``num_classes``), its first ``nn.Conv2d`` in
``modules()`` order is the stem and its last ``nn.Linear`` is the classifier, so the default pruning
targets ("every conv and linear weight except the stem and the classifier") can be found by order.
"""

from secateurs.models.registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
