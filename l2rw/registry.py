"""Name -> function registries: a new dataset, model, noise or method is one registered function.

A registry that owns a config group (`Registry("method", group="method")`) also holds each
option's schema: `@METHODS.register("l2rw", schema=L2RWConf)` stores `L2RWConf(name="l2rw")` in
Hydra's ConfigStore as `method/l2rw`, so `method=l2rw` composes with no YAML file, a knob the
option lacks fails at compose time, and the schema's `check(cfg)` runs before any work
(`l2rw.config.options.check_options`). The schema sits beside the function it configures, as
fairseq's `register_x(name, dataclass=...)`. A YAML file in that group is only for a variant
with other values (`defaults: [l2rw, _self_]`); its `name` is the registered option it runs.
"""

from collections.abc import Callable
from typing import Any

from hydra.core.config_store import ConfigStore

from l2rw.errors import ConfigError


class Registry:
    """A named table of builders, filled with the `register` decorator; with `group`, each name
    is also an option of that config group, configured by its schema."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, Callable[..., Any] | None] = {}
        self._schemas: dict[str, type] = {}

    def register(
        self, name: str, schema: type | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._add(name, fn, schema)
            return fn

        return decorator

    def option(self, name: str, schema: type) -> None:
        """An option of the group with no builder of its own (the pipeline reads its config:
        `selector=none`, `stop=early`)."""
        self._add(name, None, schema)

    def _add(self, name: str, fn: Callable[..., Any] | None, schema: type | None) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        if (schema is None) != (self.group is None):
            raise ValueError(
                f"{self.kind} '{name}': a registry with a config group takes one schema per "
                "option, one without a group none"
            )
        self._items[name] = fn
        if schema is not None:
            self._schemas[name] = schema
            ConfigStore.instance().store(group=self.group, name=name, node=schema(name=name))

    def get(self, name: str) -> Callable[..., Any]:
        fn = self._items.get(name)
        if fn is None:
            known = ", ".join(n for n in sorted(self._items) if self._items[n] is not None)
            raise ConfigError(
                f"Unknown {self.kind} '{name}'. Known {self.kind}s: {known}. "
                f"Pick one of these, or register a new one with @{self.kind.upper()}S.register."
            )
        return fn

    def schema(self, name: str) -> type:
        """The schema of option `name` (a registry with a config group)."""
        return self._schemas[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
