"""The registry: names, aliases, descriptions, errors; and the registered baselines."""

from __future__ import annotations

import pytest

from secateurs.errors import UsageError
from secateurs.methods import METHODS, MethodConfig, PruningMethod, build_method, method_config_class
from secateurs.methods.registry import Registry


def test_register_resolve_and_describe():
    reg: Registry[type] = Registry("widget")

    @reg.register("alpha", aliases=("a", "first"), description="the first one")
    class Alpha:
        pass

    @reg.register("beta")
    class Beta:
        """Second widget.

        More text.
        """

    assert reg.names() == ["alpha", "beta"]
    assert reg.get("alpha") is Alpha and reg.get("a") is Alpha and reg.get("first") is Alpha
    assert reg.canonical("first") == "alpha"
    assert sorted(reg.aliases_of("alpha")) == ["a", "first"] and reg.aliases_of("beta") == []
    assert reg.describe("a") == "the first one"
    assert reg.describe("beta") == "Second widget."  # first docstring line
    assert Alpha.registry_name == "alpha"
    assert "a" in reg and "beta" in reg and "gamma" not in reg


def test_unknown_name_lists_known_names():
    reg: Registry[type] = Registry("widget")
    reg.register("alpha")(type("Alpha", (), {}))
    with pytest.raises(UsageError, match="unknown widget 'gamma'.*alpha"):
        reg.get("gamma")


def test_names_and_aliases_register_once():
    reg: Registry[type] = Registry("widget")
    reg.register("alpha", aliases=("a",))(type("A", (), {}))
    with pytest.raises(ValueError):
        reg.register("alpha")(type("B", (), {}))
    with pytest.raises(ValueError):
        reg.register("a")(type("C", (), {}))
    with pytest.raises(ValueError):
        reg.register("delta", aliases=("alpha",))(type("D", (), {}))
    assert reg.names() == ["alpha"]


def test_baselines_are_registered():
    assert {"random", "magnitude", "gmp", "lottery"} <= set(METHODS.names())
    assert METHODS.canonical("imp") == "lottery"


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_is_a_described_pruning_method(name):
    cls = METHODS.get(name)
    assert issubclass(cls, PruningMethod)
    assert cls.registry_name == name
    assert METHODS.describe(name)
    assert issubclass(method_config_class(name), MethodConfig)
    assert method_config_class(name) is cls.Config


@pytest.mark.parametrize("name", METHODS.names())
def test_method_rejects_a_foreign_config(name):
    cls = METHODS.get(name)
    with pytest.raises(TypeError):
        cls({"sparsity": 0.5})
    for other in METHODS.names():
        other_config = METHODS.get(other).Config
        if not issubclass(other_config, cls.Config):
            with pytest.raises(TypeError):
                cls(other_config(sparsity=0.5))


@pytest.mark.parametrize("name", METHODS.names())
def test_unknown_config_field_is_rejected(name):
    with pytest.raises(TypeError):
        build_method(name, sparsity=0.5, no_such_knob=1)
