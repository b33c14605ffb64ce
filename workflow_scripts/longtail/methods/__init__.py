"""Methods and their configs, one folder per family (``baselines``, ``decoupled``, ``oltr``, ``mfm``,
``kt``, ``metamodelnet``), each with a torch-free ``config.py`` (frozen dataclasses) and a
``method.py`` (:class:`~longtail.methods.base.Method` subclasses).

``@register_config("name")`` and ``@register_method("name")`` put both under the same name in
:data:`CONFIGS` and :data:`METHODS`; ``create_method(name, params)`` fills the config from
config.yaml. Importing this package (and :func:`make_config`) never imports torch, so the
workflow checks every run's parameters at parse time.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Mapping

from ..registry import Registry

FAMILIES_PACKAGE = __name__


def _families() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if m.ispkg]


def _load_configs() -> None:
    importlib.import_module(f"{__name__}.config")
    for family in _families():
        importlib.import_module(f"{__name__}.{family}.config")


def _load_methods() -> None:
    for family in _families():
        importlib.import_module(f"{__name__}.{family}.method")


CONFIGS: Registry[type] = Registry("method", _load_configs)  # torch-free: parse time uses it
METHODS: Registry[type] = Registry("method", _load_methods)


def register_config(name: str) -> Callable[[type], type]:
    return CONFIGS.register(name)


def register_method(name: str) -> Callable[[type], type]:
    """Register a Method subclass; its ``Config`` is the dataclass registered under the same name."""

    def deco(cls: type) -> type:
        METHODS.register(name)(cls)
        cls.name = name
        cls.Config = CONFIGS.get(name)
        return cls

    return deco


def config_names() -> list[str]:
    return CONFIGS.names()


def config_class(method: str) -> type:
    return CONFIGS.get(method)


def available_methods() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type:
    return METHODS.get(name)


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def make_config(method: str, params: Mapping | None = None) -> Any:
    """Build the frozen config of ``method`` from a mapping; unknown keys or bad values raise
    ValueError naming the key."""
    cls = config_class(method)
    params = dict(params or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"method '{method}' has no parameter(s) {unknown}; known: {sorted(fields)}")
    try:
        return cls(**{k: _freeze(v) for k, v in params.items()})
    except TypeError as exc:
        raise ValueError(f"method '{method}': {exc}") from exc


def create_method(name: str, params: Mapping | None = None) -> Any:
    """An instance of the method registered as ``name`` with its config filled from ``params``."""
    return method_class(name)(make_config(name, params))


__all__ = ["CONFIGS", "METHODS", "register_config", "register_method", "config_names", "config_class",
           "available_methods", "method_class", "make_config", "create_method"]
