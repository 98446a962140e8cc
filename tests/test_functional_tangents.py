"""The fused tangents of linear, layer_norm and scaled_dot_product_attention against torch's
generic forward-mode rules (attention: on its math path) and their backwards against torch's
(the engines' dual pass through every model: `test_models.py`)."""

import pytest
import torch
import torch.nn.functional as F
from nets import DEVICES, dual_jvp

import l2rw.meta.functional_tangents as ft
from l2rw.meta import l2rw_weights
from l2rw.meta.passes import math_attention
from l2rw.models import build_model

# Which inputs carry a tangent (a None primal never does).
LINEAR_TANGENTS = [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1)]
LINEAR_SHAPES = [((7, 5), True), ((3, 4, 5), True), ((3, 4, 5), False), ((5,), True)]
NORM_SHAPES = [((6, 5), [5]), ((3, 4, 6), [6]), ((2, 3, 4, 5), [4, 5])]
ATTENTION_SHAPES = [
    ((2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 7)),  # query and key lengths differ, value width too
    ((4, 5, 8), (4, 5, 8), (4, 5, 8)),  # one batch dimension
]


def _random(shape, gen, device):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device)


def _vjp(fn, primals, grad_out):
    leaves = [None if p is None else p.clone().requires_grad_() for p in primals]
    out = fn(*leaves)
    wanted = [p for p in leaves if p is not None]
    return torch.autograd.grad(out, wanted, grad_out)


def _check(fused, torch_fn, primals, which, rtol=1e-12):
    """Output, tangent (the inputs `which` carry one) and backward of `fused` equal torch's."""
    tangents = [
        None if p is None or not on else torch.randn_like(p)
        for p, on in zip(primals, which, strict=True)
    ]
    want_out, want_tangent = dual_jvp(torch_fn, primals, tangents)
    out, tangent = dual_jvp(fused, primals, tangents)
    torch.testing.assert_close(out, want_out, rtol=rtol, atol=rtol)
    torch.testing.assert_close(tangent, want_tangent, rtol=rtol, atol=rtol)
    grad_out = torch.randn_like(want_out)
    for got, want in zip(
        _vjp(fused, primals, grad_out), _vjp(torch_fn, primals, grad_out), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "has_bias"), LINEAR_SHAPES)
@pytest.mark.parametrize("which", LINEAR_TANGENTS)
def test_linear(shape, has_bias, which, device):
    gen = torch.Generator().manual_seed(0)
    x, weight = _random(shape, gen, device), _random((3, shape[-1]), gen, device)
    bias = _random(3, gen, device) if has_bias else None
    _check(ft.linear, ft._torch_linear, (x, weight, bias), which)


def test_linear_of_a_transposed_input():
    """A non-contiguous input (nn.MultiheadAttention projects a transposed batch)."""
    gen = torch.Generator().manual_seed(1)
    x = _random((4, 6, 5), gen, "cpu").transpose(0, 1)
    weight, bias = _random((3, 5), gen, "cpu"), _random(3, gen, "cpu")
    _check(ft.linear, ft._torch_linear, (x, weight, bias), (1, 1, 1))


def test_linear_tangent_rounds_as_torchs():
    """Same operations in the same order as torch's rule: the same bits in float32, so a model
    whose only fused layers are linear ones keeps its trajectory bit for bit."""
    gen = torch.Generator().manual_seed(2)
    primals = [torch.randn(s, generator=gen) for s in ((32, 1024), (100, 1024), (100,))]
    tangents = [torch.randn_like(p) for p in primals]
    _, want = dual_jvp(ft._torch_linear, primals, tangents)
    _, got = dual_jvp(ft.linear, primals, tangents)
    assert torch.equal(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "normalized"), NORM_SHAPES)
@pytest.mark.parametrize("which", LINEAR_TANGENTS)
def test_layer_norm(shape, normalized, which, device):
    gen = torch.Generator().manual_seed(3)
    x = 2 * _random(shape, gen, device) + 1
    weight = _random(normalized, gen, device) + 1
    bias = _random(normalized, gen, device)

    def fused(x, weight, bias):
        return ft.layer_norm(x, normalized, weight, bias, 1e-5)

    def reference(x, weight, bias):
        return F.layer_norm(x, normalized, weight, bias, 1e-5)

    _check(fused, reference, (x, weight, bias), which, rtol=1e-10)


def test_layer_norm_without_affine_parameters():
    x = torch.randn(4, 6, dtype=torch.float64)

    def fused(x, weight, bias):
        return ft.layer_norm(x, [6], weight, bias)

    def reference(x, weight, bias):
        return F.layer_norm(x, [6], weight, bias)

    _check(fused, reference, (x, None, None), (1, 0, 0), rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes", ATTENTION_SHAPES)
@pytest.mark.parametrize("which", [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_attention(shapes, which, scale, device):
    gen = torch.Generator().manual_seed(4)
    primals = [_random(s, gen, device) for s in shapes]

    def fused(q, k, v):
        return ft.scaled_dot_product_attention(q, k, v, scale=scale)

    def reference(q, k, v):
        with math_attention():
            return ft._torch_attention(q, k, v, scale=scale)

    _check(fused, reference, primals, which, rtol=1e-10)


@pytest.mark.parametrize(
    "options",
    [
        {"attn_mask": torch.tensor([[True, False, True], [True, True, False], [True] * 3])},
        {"is_causal": True},
    ],
)
def test_masked_attention_keeps_torchs(options):
    primals = [torch.randn(2, 3, 4, dtype=torch.float64) for _ in range(3)]

    def fused(q, k, v):
        return ft.scaled_dot_product_attention(q, k, v, **options)

    def reference(q, k, v):
        with math_attention():
            return ft._torch_attention(q, k, v, **options)

    with math_attention():
        _check(fused, reference, primals, (1, 1, 1), rtol=1e-12)


def test_the_context_swaps_torchs_functions_and_restores_them_on_error():
    before = {name: getattr(F, name) for name in ft.FUSED}
    with pytest.raises(RuntimeError, match="inside"), ft.fused_functional_tangents():
        assert all(getattr(F, name) is fn for name, fn in ft.FUSED.items())
        raise RuntimeError("inside")
    assert {name: getattr(F, name) for name in ft.FUSED} == before


def test_cnn_weights_keep_their_bits():
    """LeNet's fast L2RW weights are the same bits with the fused linear tangent as with
    torch's rule: the committed reproductions' trajectories do not move."""
    torch.manual_seed(0)
    model = build_model("lenet", 2).train()
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 2, (32,))
    fused = l2rw_weights(model, x, y, x[:8], y[:8])
    saved = dict(ft.FUSED)
    ft.FUSED.clear()
    try:
        generic = l2rw_weights(model, x, y, x[:8], y[:8])
    finally:
        ft.FUSED.update(saved)
    assert torch.equal(fused, generic)
