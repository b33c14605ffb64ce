"""One registry class for every pluggable kind: methods, configs, backbones, losses, samplers, sources.

Each kind has one :class:`Registry` instance in its home module (``longtail.models.BACKBONES``,
``longtail.losses.LOSSES``, ...; methods and their configs in :mod:`longtail.methods`), filled by
the ``@REGISTRY.register("name")`` decorator. A registry may own a ``loader`` that imports the
modules holding its entries on first use, so importing a registry stays cheap (no torch at
Snakemake's parse time for the configs).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind, with one error message for unknown names."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._loader = loader
        self._loaded = loader is None

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before the import: the loaded modules register into this registry
            assert self._loader is not None
            self._loader()

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a second registration of a name is a bug."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} '{name}'; choose one of {self.names()}")
        return self._entries[name]

    def build(self, name: str, *args: object, params_key: str = "params", **kwargs: object) -> object:
        """Call the entry ``name`` with the arguments; an argument it does not take (a misspelt key of
        ``params_key`` in config) becomes one ValueError naming the entry."""
        factory = self.get(name)
        try:
            return factory(*args, **kwargs)  # type: ignore[operator]
        except TypeError as exc:
            raise ValueError(f"{self.kind} '{name}': bad {params_key} ({exc})") from exc

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
