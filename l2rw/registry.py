"""Name -> function registries: a new dataset, model, noise or method is one registered function."""

from collections.abc import Callable
from typing import Any

from l2rw.errors import ConfigError


class Registry:
    """A named table of builders, filled with the `register` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise ConfigError(
                f"Unknown {self.kind} '{name}'. Known {self.kind}s: {known}. "
                f"Pick one of these, or register a new one with @{self.kind.upper()}S.register."
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
