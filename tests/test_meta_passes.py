"""The meta passes' model state: BatchNorm normalises with batch statistics and updates nothing,
other buffers reach the forward as copies, and everything is restored afterwards."""

import torch
from torch import nn
from torch.func import functional_call

from l2rw.meta.passes import batch_statistics


class Counting(nn.Module):
    """A module that changes a buffer of its own in every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), Counting(), nn.ReLU()).train()


def test_batch_statistics_and_no_state_change():
    model, x = _model(), torch.randn(6, 1, 8, 8)
    model(x)  # running statistics away from their start
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = nn.functional.relu(
        nn.functional.batch_norm(model[0](x), None, None, model[1].weight, model[1].bias, True)
    )
    with batch_statistics(model) as buffers:
        out = functional_call(model, buffers, (x,))
    assert torch.allclose(out, reference, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert set(buffers) == {"2.calls"}  # BatchNorm's buffers are not copied
    assert model[1].track_running_stats


def test_restored_after_an_error_and_untracked_norms_left_alone():
    untracked, tracked = nn.BatchNorm2d(4, track_running_stats=False), nn.BatchNorm1d(3)
    model = nn.Sequential(untracked, tracked)
    try:
        with batch_statistics(model):
            assert not tracked.track_running_stats
            raise RuntimeError
    except RuntimeError:
        pass
    assert tracked.track_running_stats and not untracked.track_running_stats
