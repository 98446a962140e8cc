"""Meta-gradient engines, usable outside the runner.

`l2rw_weights` returns the per-example weights of Ren et al. (2018), Eq. 7-9, for a model's
current parameters; `l2rw_step` performs one whole L2RW training step. `meta_reweight_grad`
returns the gradient of the meta loss with respect to persistent per-example weights after an
optimizer look-ahead (Wu et al. 2023, Eq. 2-3); `meta_reweight_step` performs one whole step of
Eq. 2-4.
"""

from l2rw.meta.l2rw import l2rw_step, l2rw_weights, normalize_weights
from l2rw.meta.meta_reweight import meta_reweight_grad, meta_reweight_step

__all__ = [
    "l2rw_step",
    "l2rw_weights",
    "meta_reweight_grad",
    "meta_reweight_step",
    "normalize_weights",
]
