"""Frozen hyper-parameter dataclasses of every method, importable without torch.

The workflow validates each run's parameters at parse time (``snakemake -n`` stays fast and
fails before any job runs); the methods in :mod:`longtail.methods` use the same classes.
Add a config with ``@register_config("name")`` in a module of this package.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Mapping

_CONFIGS: dict[str, type] = {}


def register_config(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _CONFIGS:
            raise ValueError(f"config for method '{name}' registered twice")
        _CONFIGS[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def config_names() -> list[str]:
    _load_all()
    return sorted(_CONFIGS)


def config_class(method: str) -> type:
    _load_all()
    if method not in _CONFIGS:
        raise ValueError(f"unknown method '{method}'; choose one of {sorted(_CONFIGS)}")
    return _CONFIGS[method]


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
