"""Structured-config schemas and cross-field validation.

`CONF_DIR` is the Hydra config folder; `prepare()` registers what composing a config needs (the
run's schema, every option's schema, the resolvers), once per process. The runner, the report
and the demo call it; none of them needs the others for it.
"""

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def prepare() -> None:
    """Register the schemas and the resolvers (both idempotent)."""
    from l2rw.config.resolvers import register_resolvers
    from l2rw.config.schema import register_schemas

    register_schemas()
    register_resolvers()
