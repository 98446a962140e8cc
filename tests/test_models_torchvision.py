"""`model=torchvision`: any torchvision classifier by name, split into `features` and a linear
`classifier`, sized by the dataset, with local weights loaded into all but the classifier."""

import pytest
import torch
import torchvision
from torch import nn

from l2rw.errors import ConfigError
from l2rw.meta import l2rw_weights, meta_reweight_grad
from l2rw.models import build_model
from l2rw.selection.features import last_linear, rbc_features

# One torch thread: tiny tensors on a shared machine (as in test_models).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(num_classes: int, shape: tuple[int, int, int], **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        "torchvision", num_classes, image_size=shape[1], in_channels=shape[0], **options
    )


def _check_split(model: nn.Module, shape: tuple[int, ...], num_classes: int) -> None:
    x = torch.randn(3, *shape)
    model.eval()
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (3, num_classes)
    assert feats.shape == (3, model.classifier.in_features)
    torch.testing.assert_close(model.classifier(feats), logits)


def test_resnet18_features_and_classifier() -> None:
    model = _build(7, (3, 32, 32), arch="resnet18")
    assert model.training  # built in train mode, like every model
    assert model.input_shape == (3, 32, 32)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512
    assert isinstance(model.net.fc, nn.Identity)
    assert last_linear(model) is model.classifier
    _check_split(model, (3, 32, 32), 7)


def test_grayscale_images_are_repeated_to_three_channels() -> None:
    model = _build(4, (1, 28, 28), arch="resnet18").eval()
    assert model.input_shape == (1, 28, 28)
    assert model.net.conv1.in_channels == 3  # torchvision's stem, unchanged
    _check_split(model, (1, 28, 28), 4)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.classifier(model.net(x.repeat(1, 3, 1, 1))))


def test_head_found_in_a_sequential_classifier() -> None:
    """MobileNetV3's head is classifier[3], after a Linear, a Hardswish and a Dropout."""
    model = _build(5, (3, 32, 32), arch="mobilenet_v3_small")
    assert isinstance(model.net.classifier[3], nn.Identity)
    assert isinstance(model.net.classifier[0], nn.Linear)  # the hidden layer stays in features
    assert (model.classifier.in_features, model.classifier.out_features) == (1024, 5)
    _check_split(model, (3, 32, 32), 5)


def test_too_small_an_image_is_a_config_error() -> None:
    """AlexNet's pools reduce a 32x32 image to nothing."""
    with pytest.raises(ConfigError) as err:
        _build(10, (3, 32, 32), arch="alexnet")
    message = str(err.value)
    assert "arch=alexnet cannot take the dataset's input shape [3, 32, 32]" in message
    assert "Output size is too small" in message and "image_size=224" in message
    assert "\n" not in message


def test_unknown_arch_and_non_linear_head_are_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        _build(10, (3, 32, 32), arch="resnet19")
    message = str(err.value)
    assert "arch='resnet19' is not a torchvision classification model" in message
    assert "resnet18" in message and "fasterrcnn" not in message and "\n" not in message
    with pytest.raises(ConfigError, match="not a torchvision classification model"):
        _build(10, (3, 32, 32), arch="fasterrcnn_resnet50_fpn")
    with pytest.raises(ConfigError, match="no nn.Linear classifier"):
        _build(10, (3, 32, 32), arch="squeezenet1_1")


def test_arch_options_reach_torchvisions_builder() -> None:
    from conftest import compose_cfg

    cfg = compose_cfg(
        [
            "dataset=cifar10",
            "model=torchvision",
            "model.options.arch=efficientnet_b0",
            "+model.options.arch_options.dropout=0.3",
        ]
    )
    model = build_model(cfg.model.name, 10, **cfg.model.options)
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.3]
    with pytest.raises(ConfigError) as err:
        _build(10, (3, 32, 32), arch="resnet18", arch_options={"dropout": 0.2})
    message = str(err.value)
    assert "arch=resnet18 does not take model.options.arch_options={'dropout': 0.2}" in message
    assert "\n" not in message


def _save(tmp_path, net: nn.Module, name: str):
    state = net.state_dict()
    path = tmp_path / name
    torch.save(state, path)
    return path, state


def test_weights_load_into_all_but_the_classifier(tmp_path) -> None:
    torch.manual_seed(1)
    path, state = _save(tmp_path, torchvision.models.resnet18(num_classes=1000), "r18.pth")
    fresh = _build(5, (3, 32, 32), arch="resnet18")
    loaded = _build(5, (3, 32, 32), arch="resnet18", weights_path=str(path))
    ours = loaded.net.state_dict()  # torchvision's key names
    assert not any(key.startswith("fc.") for key in ours)
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    assert not torch.equal(ours["conv1.weight"], fresh.net.conv1.weight)
    assert loaded.classifier.weight.shape == (5, 512)
    for name in ("weight", "bias"):  # the classifier keeps its fresh init
        torch.testing.assert_close(
            getattr(loaded.classifier, name), getattr(fresh.classifier, name), rtol=0, atol=0
        )


def test_another_architectures_weights_are_a_config_error(tmp_path) -> None:
    path, _ = _save(tmp_path, torchvision.models.resnet34(num_classes=1000), "r34.pth")
    with pytest.raises(ConfigError) as err:
        _build(5, (3, 32, 32), arch="resnet18", weights_path=str(path))
    message = str(err.value)
    assert "does not fit torchvision's resnet18" in message and "fc is not loaded" in message
    assert "unexpected" in message and "layer1.2." in message and "\n" not in message
    with pytest.raises(ConfigError, match="absent.pth: no such file.*nothing is downloaded"):
        _build(5, (3, 32, 32), arch="resnet18", weights_path=str(tmp_path / "absent.pth"))


def test_composes_through_hydra_and_builds() -> None:
    from conftest import compose_cfg

    cfg = compose_cfg(["dataset=cifar10", "model=torchvision", "model.options.arch=resnet18"])
    assert list(cfg.model.input_shape) == [3, 32, 32]
    assert cfg.model.options.image_size == 32 and cfg.model.options.in_channels == 3
    model = build_model(cfg.model.name, 10, **cfg.model.options)
    assert model.input_shape == (3, 32, 32)
    _check_split(model, (3, 32, 32), 10)


def test_meta_engines_fast_equals_reference() -> None:
    """torchvision's ResNet-18 (in-place ReLUs, BatchNorm in train mode) through both meta
    engines at a tiny input: the fast engines equal their second-order references, and leave
    the running statistics alone; RBC reads the wrapper's classifier."""
    torch.manual_seed(0)
    model = _build(3, (3, 16, 16), arch="resnet18").double().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.8, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=g)
    w = torch.rand(4, generator=g, dtype=torch.float64)
    x_meta = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    y_meta = torch.randint(0, 3, (3,), generator=g)
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    fast = meta_reweight_grad(model, optimizer, x, y, w, x_meta, y_meta)
    reference = meta_reweight_grad(model, optimizer, x, y, w, x_meta, y_meta, engine="reference")
    assert fast.abs().max() > 1e-6
    torch.testing.assert_close(fast, reference, rtol=1e-7, atol=1e-12)
    fast = l2rw_weights(model, x, y, x_meta, y_meta)
    reference = l2rw_weights(model, x, y, x_meta, y_meta, engine="reference")
    torch.testing.assert_close(fast, reference, rtol=1e-7, atol=1e-12)
    for k, b in model.named_buffers():
        torch.testing.assert_close(b, buffers[k], rtol=0, atol=0)
    assert rbc_features(model.float(), x.float(), y).shape == (4, 3 * 513)
