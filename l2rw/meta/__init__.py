"""Meta-gradient engines, usable outside the runner.

`l2rw_weights` returns the per-example weights of Ren et al. (2018), Eq. 7-9, for a model's
current parameters; `l2rw_step` performs one whole L2RW training step.
"""

from l2rw.meta.l2rw import l2rw_step, l2rw_weights, normalize_weights

__all__ = ["l2rw_step", "l2rw_weights", "normalize_weights"]
