"""Per-example features G_j for meta-sample selection: RBC (Eq. 11-12) and GBC (Eq. 13-14).

RBC. For cross-entropy f_j = CE(z_j, y_j) with logits z_j = W h_j + b, the gradient with respect to
the last linear layer is A_j [h_j; 1]^T with A_j = softmax(z_j) - onehot(y_j) (Eq. 11-12), so one
forward pass gives it. `rbc_features` returns its row-major flattening vec(A_j (x) [h_j; 1]), i.e.
the gradient with respect to [W | b] row by row. Without labels it uses the label-free part
A_j = softmax(z_j) (Eq. S15), which is the gradient of logsumexp(z_j).

GBC. The full inner product <grad f_i, grad f_j> = sum_l <grad_l f_i, grad_l f_j> is a sum over
layers l (Eq. 13; a layer is an nn.Linear or nn.Conv2d, weight and bias together). With
A(l) = ||(1/N) sum_j grad_l f_j||^2 and p_l = A(l) / sum_l A(l), draw R layers l_1..l_R with
replacement from p and set G_j = [grad_{l_r} f_j / sqrt(R p_{l_r})]_r. Then
    E_draw <G_i, G_j> = sum_r sum_l p_l <grad_l f_i, grad_l f_j> / (R p_l) = <grad f_i, grad f_j>,
an unbiased estimate (Eq. 14) when every layer has p_l > 0; a layer with A(l) = 0 is never
drawn, as in the paper, so its term is missing from the estimate. A layer drawn n_l times gives
one block scaled by sqrt(n_l / (R p_l)): the same inner products as n_l copies, with fewer
columns. The draw is shared by all examples (the paper's footnote 3), so to compare sets
(training candidates and meta samples) put them in one call.

Per-example gradients of big layers do not fit in memory, so each layer's gradient g = delta a^T
(delta: the gradient of f_j with respect to the layer's output, a: its input with a 1 appended for
the bias; for a convolution, a sum over output positions p of delta_p a_p^T with a_p the unfolded
input patch) is projected by a Kronecker-structured Gaussian map:
    (R1 (x) R2) vec(g) = vec(sum_p (R1 delta_p)(R2 a_p)^T),
R1 [d1, out] and R2 [d2, in] with i.i.d. N(0, 1/d) entries, so E[R^T R] = I for each factor and,
the factors being independent, E[(R1 (x) R2)^T (R1 (x) R2)] = I (x) I = I: projected inner products
are unbiased for every pair (i, j), and independent of the layer draw, so the two estimates
compose. A factor whose layer size is at most its target dimension is the identity (exact).
R2 a_p at every position is one convolution of the layer's input with R2 as d2 filters (plus
R2's bias column), so no unfolded input is ever materialised. delta and a come from forward
hooks in ordinary batched forward and backward passes in eval mode, where the examples do not
interact, so these are exact per-example gradients. A(l) is computed exactly in the same pass,
from the batch gradients of the layers' parameters.
"""

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

LAYER_TYPES = (nn.Linear, nn.Conv2d)
Layers = list[tuple[str, nn.Module]]


def last_linear(model: nn.Module) -> nn.Linear:
    """The last nn.Linear registered in `model` (for the repo's models, `model.classifier`)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take features from")
    return linears[-1]


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for every submodule, then each one's own previous mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of at most `batch_size` covering range(n)."""
    return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _check_labels(x: Tensor, y: Tensor | None) -> None:
    if y is not None and y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape {(x.shape[0],)}, got {tuple(y.shape)}")


def _per_example_loss(z: Tensor, y: Tensor | None) -> Tensor:
    """CE(z_j, y_j), or logsumexp(z_j) (gradient softmax(z_j)) without labels."""
    return torch.logsumexp(z, dim=1) if y is None else F.cross_entropy(z, y, reduction="none")


def _derived_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def rbc_features(
    model: nn.Module, x: Tensor, y: Tensor | None = None, *, batch_size: int = 1024
) -> Tensor:
    """RBC features [N, C (in + 1)] (in C when the last linear layer has no bias): row j is
    vec(A_j (x) [h_j; 1]), the gradient of CE(z_j, y_j) with respect to [W | b] of `last_linear`
    flattened row by row, A_j = softmax(z_j) - onehot(y_j); label-free A_j = softmax(z_j) when
    y is None. h_j is the layer's input, captured by a forward hook; the layer's output must be
    the model's output. Computed without gradients, in eval mode, in batches on x's device."""
    _check_labels(x, y)
    layer = last_linear(model)
    seen: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        seen["h"], seen["z"] = args[0], output

    handle = layer.register_forward_hook(hook)
    out = None
    try:
        with eval_mode(model), torch.no_grad():
            for s in slices(x.shape[0], batch_size):
                z = model(x[s])
                if z is not seen.get("z") or z.ndim != 2:
                    raise ValueError(
                        "rbc_features needs a model whose output [B, C] is the output of its last "
                        f"nn.Linear ({layer})"
                    )
                h = seen["h"]
                if layer.bias is not None:
                    h = F.pad(h, (0, 1), value=1.0)
                coef = torch.softmax(z, dim=1)
                if y is not None:
                    coef = coef - F.one_hot(y[s], z.shape[1]).to(coef.dtype)
                rows = (coef[:, :, None] * h[:, None, :]).flatten(1)
                if out is None:
                    out = rows.new_empty(x.shape[0], rows.shape[1])
                out[s] = rows
    finally:
        handle.remove()
    return out


@dataclass(frozen=True)
class LayerDraw:
    """The distinct layers drawn for one GBC block, in column order (= model order): module
    names, times drawn (summing to R), p_l = A(l) / A, and the columns of each one's block."""

    names: tuple[str, ...]
    counts: tuple[int, ...]
    probs: tuple[float, ...]
    widths: tuple[int, ...]

    @property
    def scales(self) -> tuple[float, ...]:
        """sqrt(n_l / (R p_l)), the factor applied to each layer's gradient block."""
        draws = sum(self.counts)
        return tuple(
            math.sqrt(n / (draws * p)) for n, p in zip(self.counts, self.probs, strict=True)
        )


def _gbc_layers(model: nn.Module) -> Layers:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer")
    for name, m in layers:
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"):
            raise NotImplementedError(f"GBC supports ungrouped zero-padded convolutions ({name})")
    return layers


def _params(m: nn.Module) -> list[Tensor]:
    return [p for p in (m.weight, m.bias) if p is not None]


def _layer_sizes(m: nn.Module) -> tuple[int, int]:
    """(rows, columns) of the layer's gradient as the matrix [W | b]."""
    w = m.weight
    return w.shape[0], w[0].numel() + (m.bias is not None)


def _hooked_pass(
    model: nn.Module,
    layers: Layers,
    x: Tensor,
    y: Tensor | None,
    batch_size: int,
    on_batch: Callable[[slice, list[Tensor], list[Tensor]], None] | None = None,
) -> Tensor:
    """Batched forward and backward of sum_j f_j in eval mode; returns A(l) [L] (float64) and, per
    batch, hands the layers' inputs and output gradients to `on_batch`."""
    modules = [m for _, m in layers]
    params = [p for m in modules for p in _params(m)]
    inputs: dict[nn.Module, Tensor] = {}
    outputs: dict[nn.Module, Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        if module in outputs:
            raise NotImplementedError("GBC needs every layer to be called once per forward")
        inputs[module], outputs[module] = args[0].detach(), output

    handles = [m.register_forward_hook(hook) for m in modules]
    flags = [p.requires_grad for p in params]
    sums = [torch.zeros_like(p) for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            for s in slices(x.shape[0], batch_size):
                inputs.clear()
                outputs.clear()
                loss = _per_example_loss(model(x[s]), None if y is None else y[s]).sum()
                unused = [name for name, m in layers if m not in outputs]
                if unused:
                    raise ValueError(f"layers not used by the forward pass: {unused}")
                wanted = [outputs[m] for m in modules] if on_batch else []
                grads = torch.autograd.grad(loss, wanted + params)
                for acc, g in zip(sums, grads[len(wanted) :], strict=True):
                    acc += g
                if on_batch:
                    on_batch(s, [inputs[m] for m in modules], list(grads[: len(wanted)]))
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    importance, i = [], 0
    for m in modules:
        n = len(_params(m))
        importance.append(sum(((g / x.shape[0]) ** 2).sum().double() for g in sums[i : i + n]))
        i += n
    return torch.stack(importance).cpu()


def _draw(importance: Tensor, draws: int, seed: int) -> tuple[Tensor, Tensor]:
    """(p [L], counts [L]): R = `draws` layers with replacement, p_l = A(l) / A."""
    total = importance.sum()
    if not total > 0:
        raise ValueError("every layer's mean gradient is zero: no layer can be drawn")
    probs = importance / total
    gen = torch.Generator().manual_seed(_derived_seed(seed, 0))
    picks = torch.multinomial(probs, draws, replacement=True, generator=gen)
    return probs, torch.bincount(picks, minlength=len(probs))


def _projection(size: int, dim: int, gen: torch.Generator) -> Tensor:
    """[dim, size] with N(0, 1/dim) entries, or the identity when size <= dim (float64, CPU)."""
    if size <= dim:
        return torch.eye(size, dtype=torch.float64)
    return torch.randn(dim, size, generator=gen, dtype=torch.float64) / math.sqrt(dim)


def _project(m: nn.Module, a: Tensor, delta: Tensor, r_out: Tensor, r_in: Tensor) -> Tensor:
    """vec(sum_p (R1 delta_p)(R2 a_p)^T) per example: [B, d1 d2]."""
    n_in = m.weight[0].numel()
    bias = r_in[:, n_in] if m.bias is not None else None
    if isinstance(m, nn.Linear):
        a_p = F.linear(a.reshape(a.shape[0], -1, a.shape[-1]), r_in[:, :n_in], bias)
        d_p = delta.reshape(delta.shape[0], -1, delta.shape[-1]) @ r_out.T
        block = d_p.transpose(1, 2) @ a_p
    else:
        filters = r_in[:, :n_in].reshape(-1, *m.weight.shape[1:])
        a_p = F.conv2d(a, filters, bias, m.stride, m.padding, m.dilation)
        d_p = torch.einsum("do,bohw->bdhw", r_out, delta)
        block = d_p.flatten(2) @ a_p.flatten(2).transpose(1, 2)
    return block.flatten(1)


def _projected_gradients(
    model: nn.Module,
    layers: Layers,
    x: Tensor,
    y: Tensor | None,
    batch_size: int,
    proj_dims: tuple[int, int],
    proj_seed: int,
) -> tuple[Tensor, list[slice], Tensor]:
    """Projected per-example gradients of every layer [N, sum_l d1_l d2_l], each layer's columns,
    and A(l), in one pass."""
    gen = torch.Generator().manual_seed(_derived_seed(proj_seed, 1))
    dtype, device = layers[0][1].weight.dtype, x.device
    maps, cols, start = [], [], 0
    for _, m in layers:
        rows, columns = _layer_sizes(m)
        r_out, r_in = _projection(rows, proj_dims[0], gen), _projection(columns, proj_dims[1], gen)
        maps.append((r_out.to(device, dtype), r_in.to(device, dtype)))
        cols.append(slice(start, start + len(r_out) * len(r_in)))
        start = cols[-1].stop
    store = torch.empty(x.shape[0], start, dtype=dtype, device=device)

    def on_batch(s: slice, inputs: list[Tensor], deltas: list[Tensor]) -> None:
        for (_, m), a, delta, (r_out, r_in), c in zip(
            layers, inputs, deltas, maps, cols, strict=True
        ):
            store[s, c] = _project(m, a, delta, r_out, r_in)

    importance = _hooked_pass(model, layers, x, y, batch_size, on_batch)
    return store, cols, importance


def _qualified(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _exact_gradients(
    model: nn.Module, layers: Layers, x: Tensor, y: Tensor | None, batch_size: int
) -> list[Tensor]:
    """Per-example gradients of `layers` with torch.func (vmap of grad), each [N, out * in] as the
    row-major flattening of [W | b]."""
    base = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    keys = [
        [_qualified(name, key) for key in ("weight", "bias") if getattr(m, key) is not None]
        for name, m in layers
    ]
    theta = {key: base[key] for names in keys for key in names}

    def loss(theta: dict[str, Tensor], xi: Tensor, yi: Tensor | None) -> Tensor:
        z = functional_call(model, ({**base, **theta}, buffers), (xi[None],))
        return _per_example_loss(z, None if yi is None else yi[None])[0]

    per_example = vmap(grad(loss), in_dims=(None, 0, None if y is None else 0))
    blocks: list[list[Tensor]] = [[] for _ in layers]
    with eval_mode(model):
        for s in slices(x.shape[0], batch_size):
            g = per_example(theta, x[s], None if y is None else y[s])
            for out, names in zip(blocks, keys, strict=True):
                w = g[names[0]].flatten(2)
                parts = [w, g[names[1]][..., None]] if len(names) == 2 else [w]
                out.append(torch.cat(parts, dim=2).flatten(1))
    return [torch.cat(b) for b in blocks]


def gbc_features(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    seed: int,
    layers: int = 5,
    proj_dims: tuple[int, int] = (8, 32),
    proj_seed: int | None = None,
    batch_size: int = 512,
    exact: bool = False,
    return_draw: bool = False,
) -> Tensor | tuple[Tensor, LayerDraw]:
    """GBC features [N, D] (Eq. 13-14, Algorithm 3), see the module docstring.

    f_j is CE(z_j, y_j), or logsumexp(z_j) (label-free: its logit gradient is softmax(z_j)) when
    y is None. `layers` (R) layers are drawn with replacement with p_l = A(l) / A from `seed`; the
    blocks of the distinct drawn layers, in model order, are scaled by sqrt(n_l / (R p_l)), so
    <G_i, G_j> estimates <grad f_i, grad f_j> over all nn.Linear / nn.Conv2d parameters without
    bias. Each block is the layer's per-example gradient with respect to [W | b] (a conv kernel
    flattened to [out, in kh kw]) projected to d1 x d2 = min(out, proj_dims[0]) x
    min(in (+1), proj_dims[1]) by R1 (x) R2, drawn from `proj_seed` (default: `seed`),
    independently of the layer draw. `exact=True` returns the unprojected blocks (row-major [W | b],
    computed with torch.func: memory N x the drawn layers' size). Eval mode, batches of
    `batch_size` on x's device. `return_draw=True` also returns the LayerDraw.

    Memory of the projected path: N x sum over all layers of d1 d2 before the draw keeps R of them
    (LeNet with the defaults: 1,232 columns).
    """
    _check_labels(x, y)
    if layers < 1 or min(proj_dims) < 1:
        raise ValueError(f"layers ({layers}) and proj_dims {proj_dims} must be positive")
    named = _gbc_layers(model)
    if exact:
        importance = _hooked_pass(model, named, x, y, batch_size)
        probs, counts = _draw(importance, layers, seed)
        drawn = counts.nonzero().squeeze(1).tolist()
        blocks = _exact_gradients(model, [named[i] for i in drawn], x, y, batch_size)
    else:
        store, cols, importance = _projected_gradients(
            model, named, x, y, batch_size, proj_dims, seed if proj_seed is None else proj_seed
        )
        probs, counts = _draw(importance, layers, seed)
        drawn = counts.nonzero().squeeze(1).tolist()
        blocks = [store[:, cols[i]] for i in drawn]
    draw = LayerDraw(
        names=tuple(named[i][0] for i in drawn),
        counts=tuple(int(counts[i]) for i in drawn),
        probs=tuple(float(probs[i]) for i in drawn),
        widths=tuple(b.shape[1] for b in blocks),
    )
    features = torch.cat([b * scale for b, scale in zip(blocks, draw.scales, strict=True)], dim=1)
    return (features, draw) if return_draw else features


def snapshot_features(
    fn: Callable[..., Tensor],
    models: Sequence[nn.Module],
    x: Tensor,
    y: Tensor | None = None,
    **kw,
) -> Tensor:
    """Algorithm 3: G_j concatenated over the K model snapshots, [N, sum_k D_k].

    Calls fn(model_k, x, y, **kw) for each snapshot. The keyword arguments `seed` and `proj_seed`,
    when given, are replaced per snapshot by a seed derived from (seed, k) with numpy's
    SeedSequence, so GBC redraws its layers (and projections) for every snapshot.
    """
    blocks = []
    for k, model in enumerate(models):
        snapshot_kw = {
            key: _derived_seed(value, k)
            if key in ("seed", "proj_seed") and value is not None
            else value
            for key, value in kw.items()
        }
        blocks.append(fn(model, x, y, **snapshot_kw))
    return torch.cat(blocks, dim=1)
