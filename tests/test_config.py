"""Every config option composes; typos and bad values fail early with the key named."""

import dataclasses
import inspect
from pathlib import Path

import pytest
from conftest import compose_cfg
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from l2rw.config.options import MethodConf
from l2rw.config.validate import validate
from l2rw.data.imbalance import IMBALANCES
from l2rw.data.noise import NOISES
from l2rw.data.sources import SOURCES
from l2rw.errors import ConfigError
from l2rw.methods import METHODS
from l2rw.methods.stages import FINETUNES, STOPS
from l2rw.models import MODELS
from l2rw.registry import Registry
from l2rw.selection.selectors import SELECTORS
from l2rw.train import CONF_DIR

# Each option group and the registry whose names are its options.
REGISTRIES = {
    "dataset": SOURCES,
    "noise": NOISES,
    "imbalance": IMBALANCES,
    "model": MODELS,
    "method": METHODS,
    "selector": SELECTORS,
    "stop": STOPS,
    "finetune": FINETUNES,
}


def _files(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _options(group: str) -> list[str]:
    """The group's options: its config files and the options registered with a schema."""
    store = ConfigStore.instance()
    listed = store.list(group) if store.get_type(group) is ObjectType.GROUP else []
    stored = [n.removesuffix(".yaml") for n in listed]
    return sorted(set(_files(group)) | set(stored))


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
    assert set(_options("stop")) == {"final", "early"}
    assert set(_options("finetune")) == {"none", "clean"}


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in REGISTRIES for o in _options(g)], ids=lambda v: str(v)
)
def test_every_option_composes_and_names_a_registered_option(group, option):
    """A file may be a variant of a registered option (`defaults: [l2rw, _self_]` with other
    values): its `name` is the option it runs; a registered option's name is its own."""
    cfg = compose_cfg([f"{group}={option}"])
    assert cfg[group].name in REGISTRIES[group]
    if option in REGISTRIES[group]:
        assert cfg[group].name == option


@pytest.mark.parametrize("group", [g for g, r in REGISTRIES.items() if r.group is not None])
def test_each_registered_option_is_its_schema_and_has_no_file(group):
    """A group whose registry holds schemas: its options are exactly the registered names, each
    composing to its own schema with the schema's defaults, and no config file shadows one."""
    registry = REGISTRIES[group]
    assert _options(group) == registry.names()
    assert not set(_files(group)) & set(registry.names())
    for name in registry.names():
        node = compose_cfg([f"{group}={name}"])[group]
        schema = registry.schema(name)
        assert OmegaConf.get_type(node) is schema
        expected = OmegaConf.structured(schema(name=name))
        assert OmegaConf.to_container(node) == OmegaConf.to_container(expected)


def test_each_noise_schema_holds_exactly_its_process_options():
    """A noise option's knobs are its function's keyword arguments: the schema cannot offer a knob
    the process ignores, nor the process take one the config cannot set."""
    for name in NOISES.names():
        fields = {f.name for f in dataclasses.fields(NOISES.schema(name))} - {"name", "rate"}
        schema = NOISES.schema(name)
        takes = set(inspect.signature(NOISES.get(name)).parameters) - {"num_classes", "rate", "rng"}
        if schema.reads_source_labels:  # the pipeline hands it the dataset's noisy labels
            takes -= {"observed"}
        assert fields == takes, name


def test_each_imbalance_schema_holds_exactly_its_function_options():
    for name in IMBALANCES.names():
        fields = {f.name for f in dataclasses.fields(IMBALANCES.schema(name))} - {"name"}
        takes = set(inspect.signature(IMBALANCES.get(name)).parameters) - {
            "labels",
            "num_classes",
            "rng",
        }
        assert fields == takes, name


def test_each_dataset_schema_holds_exactly_its_loader_options():
    for name in SOURCES.names():
        options = SOURCES.schema(name)(name=name).options
        fields = {f.name for f in dataclasses.fields(options)}
        takes = set(inspect.signature(SOURCES.get(name)).parameters) - {"root", "train", "verify"}
        assert fields == takes, name


def test_each_model_schema_holds_exactly_its_builder_options():
    for name in MODELS.names():
        options = MODELS.schema(name)().options
        fields = {f.name for f in dataclasses.fields(options)}
        takes = set(inspect.signature(MODELS.get(name)).parameters) - {"num_classes"}
        assert fields == takes, name


def test_a_registry_with_a_group_takes_one_schema_per_option():
    registry = Registry("thing", group="thing_test")
    registry.register("a", schema=MethodConf)(lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a", schema=MethodConf)(lambda: None)
    with pytest.raises(ValueError, match="one schema per option"):
        registry.register("b")(lambda: None)
    with pytest.raises(ValueError, match="one schema per option"):
        Registry("other").register("c", schema=MethodConf)(lambda: None)


# A real-noise benchmark's preset goes with its dataset (it sets that benchmark's model).
BENCHMARK_PROTOCOLS = {
    "animal10n": "animal10n",
    "cifar_n": "cifar10n",
    "clothing1m": "clothing1m",
    "food101n": "food101n",
}


@pytest.mark.parametrize("protocol", _options("protocol"))
def test_every_protocol_composes_and_resolves(protocol):
    dataset = BENCHMARK_PROTOCOLS.get(protocol)
    overrides = [f"dataset={dataset}"] if dataset else ["dataset=cifar10", "model=resnet32"]
    cfg = compose_cfg([*overrides, f"protocol={protocol}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@pytest.mark.parametrize("table", _options("table"))
@pytest.mark.parametrize("scale", ["full", "cpu"])
def test_every_table_composes_at_both_scales(table, scale):
    cfg = compose_cfg(
        [f"+table={table}", f"scale={scale}"],
    )
    # A table file runs its own sweep, or reports another metric of another file's runs; one
    # whose runs depend on the command's data names them after it (own_data-<dataset>).
    assert cfg.table_name in _options("table") or cfg.table_name.startswith(f"{table}-")
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
        (["noise=uniform_flip", "noise.mapping=next"], "mapping"),
    ],
)
def test_a_knob_of_another_option_fails_at_compose_time(overrides, key):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose_cfg(overrides)
    assert key in str(err.value)


def test_wrong_type_fails_naming_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_cfg(["optimizer.lr=fast"])
    assert "optimizer.lr" in str(err.value) and "fast" in str(err.value)


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
        (["noise=adversarial", "noise.mapping=sideways"], "noise.mapping='sideways'"),
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


def test_a_swept_global_option_wins_over_its_table_in_the_sweeps_own_order():
    """A sweep's job composes its swept overrides before the command line's `+table=...`. A
    global option appended there (`+group=option`) is merged before the table, so a value the
    table sets too would silently beat the option's: every swept global option must compose to
    the same config in that order as after the table (`rbc_ablation_mnist` lists its switch in
    its defaults after `_self_` for this)."""
    from hydra import compose, initialize_config_dir

    from l2rw.report.spec import _global_option, _sweep_params, table_names

    def resolved(overrides: list[str]) -> dict:
        return OmegaConf.to_container(compose_cfg(overrides), resolve=True)

    checked = 0
    for table in table_names():
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", [f"+table={table}"], return_hydra_config=True)
        for raw, options in _sweep_params(cfg).items():
            for option in options:
                if _global_option(raw.lstrip("+~"), str(option)) is None:
                    continue
                job = [f"{raw}={option}", f"+table={table}"]
                assert resolved(job) == resolved(job[::-1]), f"{table}: {raw}={option}"
                checked += 1
    assert checked >= 8 + 2  # at least rbc_ablation_mnist's switches and Table 10's arms
