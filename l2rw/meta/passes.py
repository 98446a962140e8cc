"""How the engines' meta passes run the model: in train mode, with batch statistics, and without
changing its state.

A look-ahead or dual forward must use batch statistics (as the real step does) but leave the
running statistics alone. BatchNorm layers are switched to `track_running_stats=False` for the
pass, which makes them normalise with batch statistics and update nothing, at no cost; any other
buffer is handed to `functional_call` as a copy, so that no forward can change it. Copying every
buffer instead costs two clones per BatchNorm layer and pass (ResNet-32: 186 of the fast meta
re-weighting step's 4,166 dispatched operations), which on a GPU are kernel launches.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm

from l2rw.meta.batchnorm_tangents import fused_batchnorm_tangents
from l2rw.meta.functional_tangents import fused_functional_tangents


@contextmanager
def train_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Inside, BatchNorm layers normalise with batch statistics and update nothing; yields the
    copies of the model's other buffers, to pass to `functional_call` with the parameters."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    owned = {id(b) for m in norms for b in m.buffers(recurse=False)}
    copies = {n: b.detach().clone() for n, b in model.named_buffers() if id(b) not in owned}
    for m in norms:
        m.track_running_stats = False
    try:
        yield copies
    finally:
        for m in norms:
            m.track_running_stats = True


@contextmanager
def math_attention() -> Iterator[None]:
    """Scaled-dot-product attention on its math path: the fused kernels have neither a
    forward-mode rule nor a second derivative, which the JVP passes and the reference engines'
    second-order backward need (everywhere else the fused kernels run as usual)."""
    with sdpa_kernel([SDPBackend.MATH]):
        yield


@contextmanager
def dual_pass(model: nn.Module) -> Iterator[None]:
    """A forward-mode (JVP) pass of `model`: a dual level, and the fused tangents of BatchNorm
    (`l2rw.meta.batchnorm_tangents`), linear layers, LayerNorm and attention
    (`l2rw.meta.functional_tangents`; the attention it leaves to torch, masked or with dropout,
    takes the math path)."""
    with (
        fwAD.dual_level(),
        fused_batchnorm_tangents(model),
        fused_functional_tangents(),
        math_attention(),
    ):
        yield
