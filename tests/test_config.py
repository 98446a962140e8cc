"""Every config option composes; typos and bad values fail early with the key named."""

from pathlib import Path

import pytest
from conftest import compose_cfg
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from l2rw.config.validate import validate
from l2rw.errors import ConfigError
from l2rw.train import CONF_DIR

GROUPS = ["dataset", "noise", "imbalance", "model", "method", "selector"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_groups_have_the_documented_options():
    assert set(_options("dataset")) >= {
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "imagenet10",
        "toy2d",
    }
    assert set(_options("noise")) >= {
        "none",
        "uniform_flip",
        "uniform",
        "background",
        "adversarial",
        "real",
    }
    assert set(_options("imbalance")) == {"none", "binary", "longtail"}
    assert set(_options("model")) >= {"lenet", "resnet32", "wrn28_10", "resnet34", "mlp"}
    assert "baseline" in _options("method") and "none" in _options("selector")


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_option_composes(group, option):
    cfg = compose_cfg([f"{group}={option}"])
    assert cfg[group].name == option


@pytest.mark.parametrize("protocol", _options("protocol"))
def test_every_protocol_composes_and_resolves(protocol):
    cfg = compose_cfg(["dataset=cifar10", "model=resnet32", f"protocol={protocol}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@pytest.mark.parametrize("table", _options("table"))
@pytest.mark.parametrize("scale", ["full", "cpu"])
def test_every_table_composes_at_both_scales(table, scale):
    cfg = compose_cfg(
        [f"+table={table}", f"scale={scale}"],
    )
    # A table file runs its own sweep, or reports another metric of another file's runs.
    assert cfg.table_name in _options("table")
    assert cfg.train.length > 0 and cfg.report.seeds >= 1


def test_misspelled_key_fails_naming_it():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose_cfg(["train.lrr=0.1"])
    assert "lrr" in str(err.value)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["method=baseline", "method.engine=reference"], "engine"),
        (["method=l2rw", "method.weighting=batch"], "weighting"),
        (["selector=none", "selector.budget=20"], "budget"),
    ],
)
def test_a_knob_of_another_option_fails_at_compose_time(overrides, key):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose_cfg(overrides)
    assert key in str(err.value)


def test_wrong_type_fails_naming_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_cfg(["train.lr=fast"])
    assert "train.lr" in str(err.value) and "fast" in str(err.value)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["noise=uniform_flip", "noise.rate=1.5"], "noise.rate=1.5"),
        (["model=resnet32"], "model=resnet32"),
        (["imbalance=binary", "imbalance.majority_fraction=1.0"], "leaves a class empty"),
        (["imbalance=binary", "imbalance.classes=[4,4]"], "imbalance.classes"),
        (["imbalance=longtail", "imbalance.factor=0.5"], "imbalance.factor"),
        (["method=l2rw", "dataset.clean_size=0"], "clean_size"),
        (["train.max_steps=0"], "train.max_steps"),
        (["dataset.hyper_val_from=elsewhere"], "dataset.hyper_val_from"),
        (["method=proportion", "method.weighting=sometimes"], "method.weighting='sometimes'"),
        (["method=l2rw", "dataset.clean_size=5", "method.engine=slow"], "method.engine='slow'"),
        (["method=random", "method.random_std=0"], "method.random_std=0"),
        (["method=meta_reweight", "dataset.clean_size=5", "method.meta_lr=-1"], "meta_lr"),
        (["noise=uniform_flip", "noise.mapping=next"], "does not take noise.mapping"),
        (
            ["protocol=rbc", "method=meta_reweight", "selector=rbc", "selector.snapshot_every=0"],
            "selector.snapshot_every=0",
        ),
        (
            ["protocol=rbc", "method=meta_reweight", "selector=gbc", "selector.batch_size=0"],
            "selector.batch_size=0",
        ),
    ],
)
def test_cross_field_checks(overrides, needle):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(overrides))
    assert needle in str(err.value)


def test_defaults_validate():
    validate(compose_cfg([]))
    validate(compose_cfg(["dataset=toy2d", "model=mlp"]))


@pytest.mark.parametrize("table", ["rbc_table10", "rbc_table10_mnist"])
@pytest.mark.parametrize("arm", ["with", "without"])
@pytest.mark.parametrize("noise", ["uniform_flip", "adversarial"])
def test_each_pretraining_arm_of_table10_validates(table, arm, noise):
    cfg = compose_cfg([f"+table={table}", "scale=cpu", f"noise={noise}", f"+pretraining={arm}"])
    validate(cfg)
    assert cfg.selector.pretrain == (arm == "with")
    assert (cfg.dataset.clean_size == 0) == (arm == "without")
