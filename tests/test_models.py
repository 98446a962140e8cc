"""Model contract: shapes, features/classifier split, sizes, forward-mode AD, registry errors."""

import pytest
import torch
from torch import nn
from torch.autograd import forward_ad
from torch.func import functional_call, jvp
from torchvision.models import resnet34

from l2rw.errors import ConfigError
from l2rw.meta import meta_reweight_grad
from l2rw.meta.passes import batch_statistics, dual_pass, math_attention
from l2rw.models import MODELS, build_model
from l2rw.selection.features import gbc_features, last_linear, rbc_features

# One torch thread: on a shared machine, two threads made the ResNet-34 checks ~10x slower.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

INPUT_SHAPES = {
    "lenet": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "mlp": (2,),
    "resnet32": (3, 32, 32),
    "resnet34": (3, 32, 32),
    "resnet34_imagenet": (3, 224, 224),
    "wrn28_10": (3, 32, 32),
    "vit": (1, 28, 28),
    "torchvision": (3, 224, 224),
}
SMALL = [name for name in MODELS.names() if name != "wrn28_10"]
# The globally pooled CNNs accept smaller images; 8x8 keeps the float64 AD check fast.
AD_SHAPES = {
    "resnet32": (3, 8, 8),
    "resnet34": (3, 8, 8),
    "resnet34_imagenet": (3, 32, 32),
    "torchvision": (3, 32, 32),
}
# The ImageNet ResNet-34 nominally takes 224x224; 64x64 keeps its forward check cheap.
FORWARD_SHAPES = {"resnet34_imagenet": (3, 64, 64), "torchvision": (3, 64, 64)}


@pytest.fixture(scope="module")
def wrn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("wrn28_10", 10)


def _build(name: str, num_classes: int, wrn: nn.Module) -> nn.Module:
    if name == "wrn28_10" and num_classes == 10:
        return wrn
    torch.manual_seed(0)
    return build_model(name, num_classes)


def test_registry_lists_every_model() -> None:
    assert MODELS.names() == sorted(INPUT_SHAPES)


# Every model with 10 and 2 classes, but WRN-28-10: built once, with 10 classes, to keep the
# suite fast.
@pytest.mark.parametrize(
    "name,num_classes",
    [(n, k) for k in (10, 2) for n in sorted(INPUT_SHAPES) if (n, k) != ("wrn28_10", 2)],
)
def test_output_features_and_classifier(name: str, num_classes: int, wrn: nn.Module) -> None:
    model = _build(name, num_classes, wrn).eval()
    assert tuple(model.input_shape) == INPUT_SHAPES[name]
    x = torch.randn(3, *FORWARD_SHAPES.get(name, model.input_shape))
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
        assert isinstance(model.classifier, nn.Linear)
        assert logits.shape == (3, num_classes)
        assert feats.shape == (3, model.classifier.in_features)
        torch.testing.assert_close(model.classifier(feats), logits)


def test_parameter_counts(wrn: nn.Module) -> None:
    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    assert 0.45e6 < count(build_model("resnet32", 10)) < 0.47e6
    assert 35.5e6 < count(wrn) < 36.5e6
    assert 21.0e6 < count(build_model("resnet34", 10)) < 21.5e6
    assert count(build_model("resnet32", 10, bn_scale=False)) < count(build_model("resnet32", 10))


@pytest.mark.parametrize("name", SMALL)
def test_construction_is_deterministic(name: str) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(build_model(name, 10).state_dict())
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=0, atol=0)


def test_lenet_tf_init() -> None:
    torch.manual_seed(0)
    model = build_model("lenet", 2)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            assert module.weight.abs().max() <= 0.2
            assert 0.07 < module.weight.std() < 0.1
            assert not module.bias.any()
    with pytest.raises(ConfigError, match="'tf' or 'torch'"):
        build_model("lenet", 2, init="keras")


@pytest.mark.parametrize("name", SMALL)
def test_forward_mode_ad_matches_reverse_mode(name: str) -> None:
    """jvp (torch.func, dual tensors, and the engines' dual pass with its fused tangents) of the
    train-mode output w.r.t. all parameters, checked against reverse mode through
    u·(J v) = <J^T u, v>; BatchNorm uses batch statistics."""
    torch.manual_seed(0)
    model = build_model(name, 3).double().train()
    x = torch.randn(4, *AD_SHAPES.get(name, model.input_shape), dtype=torch.float64)
    # Off their initial values: LayerNorm's weight of 1 would hide a missing factor.
    params = {k: p.detach() + 0.1 * torch.randn_like(p) for k, p in model.named_parameters()}
    tangents = {k: torch.randn_like(p) for k, p in params.items()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}

    def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, (p, {k: b.clone() for k, b in buffers.items()}), (x,))

    with math_attention():  # as in the engines' JVP passes: fused attention has no JVP rule
        out, out_dot = jvp(f, (params,), (tangents,))

    with forward_ad.dual_level(), math_attention():
        duals = {k: forward_ad.make_dual(p, tangents[k]) for k, p in params.items()}
        dual_out_dot = forward_ad.unpack_dual(f(duals)).tangent

    # The engines' dual pass: every fused tangent at once (BatchNorm, linear, LayerNorm,
    # attention), without a graph.
    with torch.no_grad(), dual_pass(model), batch_statistics(model) as copies:
        duals = {k: forward_ad.make_dual(p, tangents[k]) for k, p in params.items()}
        fused = forward_ad.unpack_dual(functional_call(model, (duals, copies), (x,)))

    u = torch.randn_like(out)
    leaves = {k: p.clone().requires_grad_() for k, p in params.items()}
    grads = torch.autograd.grad((f(leaves) * u).sum(), list(leaves.values()))
    expected = sum((g * tangents[k]).sum() for g, k in zip(grads, leaves, strict=True))
    torch.testing.assert_close((out_dot * u).sum(), expected)
    torch.testing.assert_close(dual_out_dot, out_dot)
    torch.testing.assert_close(fused.primal, out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused.tangent, out_dot, rtol=1e-9, atol=1e-9)
    for k, b in model.named_buffers():
        torch.testing.assert_close(b, buffers[k], rtol=0, atol=0)


def test_unknown_model_and_option_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="Known models: lenet, lenet5, mlp, resnet32"):
        build_model("resnet1000", 10)
    with pytest.raises(ConfigError, match="bn_momentum"):
        build_model("resnet32", 10, bn_mometum=0.001)


def test_options_reach_the_model() -> None:
    model = build_model("resnet32", 10, bn_momentum=0.001, bn_eps=1e-3, bn_scale=False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.001 and m.eps == 1e-3 and m.weight is None for m in norms)
    assert build_model("mlp", 2, hidden=8, input_shape=[5]).input_shape == (5,)


def _torchvision_resnet34_file(tmp_path, **edit) -> tuple:
    """A freshly built torchvision ResNet-34's state dict (1000-way fc) saved in tmp_path."""
    torch.manual_seed(1)
    state = resnet34(weights=None).state_dict()
    for key, value in edit.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    path = tmp_path / "resnet34-test.pth"
    torch.save(state, path)
    return path, state


def test_resnet34_imagenet_loads_a_local_backbone(tmp_path) -> None:
    path, state = _torchvision_resnet34_file(tmp_path)
    torch.manual_seed(0)
    fresh = build_model("resnet34_imagenet", 10)
    torch.manual_seed(0)
    loaded = build_model("resnet34_imagenet", 10, weights_path=str(path))
    assert isinstance(loaded.classifier, nn.Linear) and loaded.classifier is loaded.fc
    assert loaded.fc.weight.shape == (10, 512)
    ours = loaded.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    assert not torch.equal(ours["conv1.weight"], fresh.state_dict()["conv1.weight"])
    for key in ("fc.weight", "fc.bias"):
        torch.testing.assert_close(ours[key], fresh.state_dict()[key], rtol=0, atol=0)
    # An old checkpoint (PyTorch < 0.4) has no BatchNorm batch counters: still loads.
    old, _ = _torchvision_resnet34_file(tmp_path, **{"bn1.num_batches_tracked": None})
    build_model("resnet34_imagenet", 10, weights_path=str(old))


def test_resnet34_imagenet_forward_on_a_small_image() -> None:
    model = build_model("resnet34_imagenet", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10) and model.features(x).shape == (2, 512)


def test_resnet34_imagenet_bad_weights_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        build_model("resnet34_imagenet", 10, weights_path=str(tmp_path / "absent.pth"))
    message = str(err.value)
    assert "absent.pth: no such file" in message and "nothing is downloaded" in message
    assert "\n" not in message
    wrong, _ = _torchvision_resnet34_file(
        tmp_path, **{"layer1.0.conv1.weight": None, "conv1.weight": torch.zeros(64, 1, 7, 7)}
    )
    with pytest.raises(ConfigError) as err:
        build_model("resnet34_imagenet", 10, weights_path=str(wrong))
    message = str(err.value)
    assert "does not fit torchvision's ResNet-34" in message and "\n" not in message
    assert "missing 1: layer1.0.conv1.weight" in message
    assert "conv1.weight (64, 1, 7, 7) (expected (64, 3, 7, 7))" in message
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read as a PyTorch state dict"):
        build_model("resnet34_imagenet", 10, weights_path=str(garbage))


def test_resnet34_imagenet_meta_engine_and_selection_features() -> None:
    """torchvision's blocks (in-place ReLU and residual sum, BatchNorm) through the meta
    re-weighting engine: the fast weight gradient equals the second-order reference and leaves
    the running statistics alone; RBC reads the fc, GBC draws among its convolutions and fc."""
    torch.manual_seed(0)
    model = build_model("resnet34_imagenet", 10).double().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.8, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=g)
    w = torch.rand(4, generator=g, dtype=torch.float64)
    x_meta = torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float64)
    y_meta = torch.randint(0, 10, (3,), generator=g)
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    fast = meta_reweight_grad(model, optimizer, x, y, w, x_meta, y_meta)
    reference = meta_reweight_grad(model, optimizer, x, y, w, x_meta, y_meta, engine="reference")
    assert fast.abs().max() > 1e-6
    torch.testing.assert_close(fast, reference, rtol=1e-7, atol=1e-12)
    for k, b in model.named_buffers():
        torch.testing.assert_close(b, buffers[k], rtol=0, atol=0)
    model = model.float()
    assert last_linear(model) is model.fc
    assert rbc_features(model, x.float(), y).shape == (4, 10 * 513)
    features, draw = gbc_features(model, x.float(), y, seed=0, return_draw=True)
    assert features.shape[0] == 4 and len(draw.names) >= 1


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_takes_the_datasets_image_size_and_channels(pool: str) -> None:
    from conftest import compose_cfg

    cfg = compose_cfg(["dataset=cifar10", "model=vit", f"model.options.pool={pool}"])
    assert list(cfg.model.input_shape) == [3, 32, 32]
    model = build_model("vit", 10, **cfg.model.options).eval()
    assert model.input_shape == (3, 32, 32)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_vit_refuses_a_patch_that_does_not_tile_the_image() -> None:
    with pytest.raises(ConfigError, match="not a multiple of patch_size=5.*dim=30"):
        build_model("vit", 10, image_size=28, patch_size=5, dim=30, heads=4)
