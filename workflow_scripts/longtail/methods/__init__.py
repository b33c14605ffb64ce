"""Method registry: ``@register_method("name")`` on a :class:`Method` subclass whose ``Config`` is a
frozen dataclass. ``create_method(name, params)`` fills that config from config.yaml."""

from __future__ import annotations

from typing import Callable, Mapping

from ..configs import config_class, make_config
from ..configs.base import TrainConfig
from .base import Method

_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Register a Method subclass; its ``Config`` is the dataclass registered under the same name
    in :mod:`longtail.configs`."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method '{name}' registered twice")
        cls.name = name
        cls.Config = config_class(name)
        _METHODS[name] = cls
        return cls

    return deco


def available_methods() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"unknown method '{name}'; choose one of {sorted(_METHODS)}")
    return _METHODS[name]


def create_method(name: str, params: Mapping | None = None) -> Method:
    cls = method_class(name)
    return cls(make_config(name, params))


_LOADED = False


def _load_all() -> None:
    """Import the modules that register methods (lazily, so importing the registry stays cheap)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")


__all__ = ["Method", "TrainConfig", "register_method", "create_method", "method_class", "available_methods",
           "make_config", "config_class"]
