"""Method pipelines: each method name maps to one registered function taking a RunContext."""

from l2rw.registry import Registry

METHODS = Registry("method")

from l2rw.methods import reweighting  # noqa: E402,F401  (registers the per-batch methods)
