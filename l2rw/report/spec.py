"""A table's report settings, composed from its Hydra config exactly as its sweep sees them."""

from dataclasses import dataclass
from functools import cache
from itertools import product
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from l2rw.config import CONF_DIR, prepare
from l2rw.errors import UserError


class ReportError(UserError):
    """The report cannot be made (unknown table, no records, unreadable source)."""


@dataclass(frozen=True)
class TableSpec:
    # The runs' table_name (which records belong here) and the conf/table file reported: two
    # files may report the same runs, e.g. two metrics of one sweep.
    name: str
    table: str
    title: str
    # The results files' name, without the scale (report.file, else `table`).
    file: str
    rows: list[str]
    columns: list[str]
    metric: str
    as_error: bool
    seeds: int
    figure: str | None
    scale: str
    # Expected values of every row / column key, in sweep order; None: take what records hold.
    expected: dict[str, list[Any] | None]
    expected_seeds: list[int]
    output_root: str
    wandb_project: str
    wandb_entity: str | None
    # Figures beyond `figure`, drawn from the same records.
    extra_figures: tuple[str, ...] = ()
    # (label, metric) of each row a run yields under the `stage` key; empty: one row, `metric`.
    stages: tuple[tuple[str, str], ...] = ()
    # Rows (without the stage) that per-run figures draw; empty: all.
    figure_rows: tuple[str, ...] = ()
    # Row / column keys that one swept group sets together (`rbc_switch`), each a tuple whose
    # `expected` lists align option by option.
    joint: tuple[tuple[str, ...], ...] = ()
    # (key, value) of the PROTOCOL_KEYS the table's config sets and neither its rows, columns
    # nor its sweep vary: the protocol its runs are made under now.
    protocol: tuple[tuple[str, Any], ...] = ()
    # The config overrides the table was composed with, but the scale (`dataset=arrays`,
    # `rbc_switch=previous seed=2`): part of the commands that remake its runs and its report.
    overrides: tuple[str, ...] = ()

    def metrics(self) -> list[tuple[str | None, str]]:
        """(stage label, metric) of each frame row one record yields; with the key ROUNDS, the
        metric each of its rounds reports (frame.record_values)."""
        return list(self.stages) if self.stages else [(None, self.metric)]

    @property
    def per_round(self) -> bool:
        """One value per selection round of a run (the key ROUNDS), not one per run."""
        return ROUNDS in self.keys

    @property
    def keys(self) -> list[str]:
        return [*self.rows, *self.columns]

    @property
    def short(self) -> dict[str, str]:
        return short_names(self.keys)

    def expected_cells(self) -> list[tuple[Any, ...]] | None:
        """Every (row values..., column values...) the sweep should produce, or None if unknown:
        the product over the keys, but keys set together by one swept group (`joint`) take their
        values option by option, not in every combination."""
        keys = self.keys
        if any(self.expected[k] is None for k in keys):
            return None
        factors: list[tuple[str, ...]] = []
        for key in keys:
            group = next((g for g in self.joint if key in g), (key,))
            if group not in factors:
                factors.append(group)
        options = [list(zip(*(self.expected[k] for k in group), strict=True)) for group in factors]
        cells = []
        for combo in product(*options):
            value = {
                k: v
                for group, vs in zip(factors, combo, strict=True)
                for k, v in zip(group, vs, strict=True)
            }
            cells.append(tuple(hashable(value[k]) for k in keys))
        return cells


# The row key whose values are a run's stages (report.stages), not a config value.
STAGE = "stage"
# The row / column key whose values are the meta-set sizes of a selection run's rounds, not a
# config value: a run fills one cell per round in its record's `selection.rounds` (round 0, the
# warm-up, included), each with that round's `report.metric` (`test_acc_es`: the round's test
# accuracy at its best validation accuracy, what a run's `metrics.test_acc` is for its last).
ROUNDS = "selection.meta_samples"


# The value of a row / column key in a cell whose runs have no such setting: an option of a
# swept global group that leaves the key unset where the table's config has none either (with
# `+approach`, `method.lookahead` of the baseline row).
NOT_APPLICABLE = "—"


def table_names() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "table").glob("*.yaml"))


# Settings added after records were made, with the value those records ran under: a record
# without the key is read as having it (`l2rw.report.frame.recorded_value`).
LEGACY_VALUES: dict[str, Any] = {
    "selector.round_init": "scratch",
    "selector.warmup_init": "scratch",
    "method.meta_lr_scale": "none",
    "train.meta_sampling": "epochs",
}
# Settings that make a table's protocol beyond its rows and columns. A report counts the runs of
# one protocol only: its config's, or, until the table is re-run, the earlier one
# (l2rw.report.aggregate); a run with no value for a key (e.g. noise.mapping with uniform noise)
# is one the key does not apply to.
PROTOCOL_KEYS = (
    "selector.round_init",
    "selector.warmup_init",
    "method.meta_lr",
    "method.meta_lr_scale",
    "method.init",
    "train.meta_sampling",
    "noise.mapping",
    "dataset.normalize",
)


# One row per run in the report's frame: these columns, after the table's row / column keys.
RUN_COLUMNS = [
    "run",
    "table",
    "scale",
    "seed",
    "status",
    "error",
    "metric",
    "value",
    "variant",
    "protocol",
    "own_protocol",
    "git_commit",
    "device",
    "wall_time_s",
    "started_at",
    "finished_at",
]
# Column names the report uses itself; a key whose short name is one of them keeps its full name.
RESERVED = {
    *RUN_COLUMNS,
    "row",
    "column",
    "mean",
    "sd",
    "ci95",
    "n",
    "seeds",
    "missing_seeds",
    "flags",
}


def short_names(keys: list[str]) -> dict[str, str]:
    """Column names for dotted keys: the last part (the group for `x.name`); the full key with
    `_` for `.` when that clashes with another key or a reserved name."""

    def short(key: str) -> str:
        parts = key.split(".")
        return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]

    names = [short(k) for k in keys]
    return {
        k: n if names.count(n) == 1 and n not in RESERVED else k.replace(".", "_")
        for k, n in zip(keys, names, strict=True)
    }


def hashable(value: Any) -> Any:
    """Config values as dict keys: lists become tuples, everything else unchanged."""
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    return value


def value_order(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort key for cells: numbers numerically, before anything else (as text)."""
    return tuple(
        (0, v, "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0, str(v))
        for v in values
    )


def load_spec(table: str, overrides: list[str], output_root: str | None = None) -> TableSpec:
    """Compose `+table=<table>` with the user's overrides and read its `report:` section."""
    known = table_names()
    if table not in known:
        raise ReportError(
            f"There is no table named '{table}'. Tables are the files in conf/table/: "
            f"{', '.join(known) or '(none)'}. Pass one as +table=NAME, or `all` for every table."
        )
    prepare()
    try:
        fixed, command_line, swept = _split_sweeps(overrides)
        base = [f"+table={table}", *fixed]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", base, return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.sweeper.params = _command_line_sweep(
                    cfg.hydra.sweeper.params, command_line, swept
                )
            options = _global_options_composed(cfg, base)
        given = tuple(o for o in overrides if o.partition("=")[0].lstrip("+~") != "scale")
        return _spec(cfg, table, output_root, options, given)
    except MissingConfigException as err:
        raise ReportError(f"{str(err).splitlines()[0]}. Check the overrides' spelling.") from None
    except (HydraException, OmegaConfBaseException) as err:
        reason = " ".join(str(err).splitlines()[:2])
        raise ReportError(f"The config of table '{table}' does not compose: {reason}") from None


def _split_sweeps(overrides: list[str]) -> tuple[list[str], dict[str, str], set[str]]:
    """The overrides with each sweep (`noise.rate=0.2,0.4`, as the sweep's command line gave it)
    set to its first value, every override as a sweeper parameter (key -> its value text), and
    the keys swept: the report expects the cells of the sweep the command ran."""
    parser = OverridesParser.create()
    fixed, params, swept = [], {}, set()
    for text in overrides:
        override = parser.parse_override(text)
        params[override.get_key_element()] = text.partition("=")[2]
        if not override.is_sweep_override():
            fixed.append(text)
            continue
        first = next(iter(override.sweep_iterator()))
        fixed.append(f"{override.get_key_element()}={first}")
        swept.add(override.get_key_element())
    return fixed, params, swept


def _command_line_sweep(
    table_params: Any, command_line: dict[str, str], swept: set[str]
) -> dict[str, Any]:
    """The sweep a multirun with these command-line overrides runs, as Hydra's basic sweeper
    builds it: the table's sweeper parameters, each replaced by the command line's value for the
    same key (`rbc_switch=previous` runs that option alone, `seed=2` that seed), whether swept or
    not, and the command line's own sweeps added. Keys match without their `+` / `~`."""
    params = dict(table_params or {})
    for key, value in command_line.items():
        written = [k for k in params if k.lstrip("+~") == key.lstrip("+~")]
        if written or key in swept:
            for k in written:
                del params[k]
            params[key] = value
    return params


# (group, option) -> the table's config composed with that option of a swept global group.
ComposedOptions = dict[tuple[str, str], DictConfig]


def _global_options_composed(cfg: DictConfig, base: list[str]) -> ComposedOptions:
    """The table composed with each option of each swept `# @package _global_` group (e.g.
    `rbc_switch`), as its sweep's jobs compose it: what an option sets through the table's
    interpolations (a scale's length) is resolved, not read from the option's file."""
    composed: ComposedOptions = {}
    for raw, options in _sweep_params(cfg).items():
        group = raw.lstrip("+~")
        for option in options:
            if _global_option(group, str(option)) is not None:
                composed[group, str(option)] = compose("train", [*base, f"{raw}={option}"])
    return composed


def _spec(
    cfg: DictConfig,
    table: str,
    output_root: str | None,
    options: ComposedOptions,
    overrides: tuple[str, ...],
) -> TableSpec:
    if not cfg.table_name:
        raise ReportError(f"conf/table/{table}.yaml sets no table_name, so it has no records.")
    if cfg.scales and cfg.scale not in cfg.scales:
        raise ReportError(
            f"scale={cfg.scale} is not a scale of table '{table}': it defines "
            f"{', '.join(cfg.scales)}."
        )
    report = cfg.report
    keys = [*report.rows, *report.columns]
    if (STAGE in keys) != bool(report.stages):
        raise ReportError(
            f"conf/table/{table}.yaml: report.stages and the row key `{STAGE}` go together: "
            "list the stages' labels and metrics and name `stage` among report.rows, or neither."
        )
    if ROUNDS in keys and report.stages:
        raise ReportError(
            f"conf/table/{table}.yaml: the key `{ROUNDS}` (a value per selection round) and "
            "report.stages (a value per stage) cannot go together."
        )
    sweeps = _sweep_values(cfg)
    seeds = sweeps.get("seed")
    return TableSpec(
        name=cfg.table_name,
        table=table,
        title=report.title or cfg.table_name,
        file=report.file or table,
        rows=list(report.rows),
        columns=list(report.columns),
        metric=report.metric,
        as_error=report.as_error,
        seeds=report.seeds,
        figure=report.figure,
        extra_figures=tuple(report.extra_figures),
        stages=tuple((str(label), metric) for label, metric in report.stages.items()),
        figure_rows=tuple(report.figure_rows),
        scale=cfg.scale,
        expected={k: _expected_values(cfg, k, sweeps, options) for k in keys},
        expected_seeds=[int(s) for s in seeds] if seeds else list(range(report.seeds)),
        output_root=output_root or cfg.paths.output_root,
        wandb_project=cfg.logger.wandb.project,
        wandb_entity=cfg.logger.wandb.entity,
        protocol=_protocol(cfg, keys, sweeps, options),
        joint=_joint_keys(cfg, keys, sweeps, options),
        overrides=overrides,
    )


def _config_value(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _set_by(
    cfg: DictConfig, group: str, options: list[Any], key: str, composed: ComposedOptions
) -> list[Any] | None:
    """What each option of the swept `group` makes `key`, when `group` is a global one whose
    options set it (their values differ from each other or from the table's); else None."""
    if not options or any((group, str(o)) not in composed for o in options):
        return None
    values = [_config_value(composed[group, str(o)], key) for o in options]
    base = _config_value(cfg, key)
    return values if any(v != base for v in values) else None


def _joint_keys(
    cfg: DictConfig, keys: list[str], sweeps: dict[str, list[Any]], composed: ComposedOptions
) -> tuple[tuple[str, ...], ...]:
    """For each swept global group that sets two or more of the table's keys, those keys."""
    joint = []
    for swept, options in sweeps.items():
        set_here = tuple(k for k in keys if _set_by(cfg, swept, options, k, composed) is not None)
        if len(set_here) > 1:
            joint.append(set_here)
    return tuple(joint)


def _protocol(
    cfg: DictConfig, keys: list[str], sweeps: dict[str, list[Any]], composed: ComposedOptions
) -> tuple[tuple[str, Any], ...]:
    """The table config's values of the PROTOCOL_KEYS it sets and does not vary (a swept group,
    `selector` or `noise`, may: its options either share the table's value or have none, and a
    run with none is one the key does not apply to)."""

    def varied(key: str) -> bool:
        return key in keys or any(
            key == swept or _set_by(cfg, swept, options, key, composed) is not None
            for swept, options in sweeps.items()
        )

    values = ((key, OmegaConf.select(cfg, key)) for key in PROTOCOL_KEYS if not varied(key))
    return tuple((key, value) for key, value in values if value is not None)


def protocol_text(values: tuple[tuple[str, Any], ...] | list[tuple[str, Any]]) -> str:
    """`key=value, ...`: how reports name a protocol."""
    return ", ".join(f"{key}={value}" for key, value in values)


def _sweep_values(cfg: DictConfig) -> dict[str, list[Any]]:
    """The sweeper's parameters, expanded: {"method": ["l2rw", ...], "seed": [0, 1], ...}."""
    return {key.lstrip("+~"): values for key, values in _sweep_params(cfg).items()}


def _sweep_params(cfg: DictConfig) -> dict[str, list[Any]]:
    """The sweeper's parameters, expanded, under their keys as written (`rbc_switch`)."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    parser = OverridesParser.create()
    out: dict[str, list[Any]] = {}
    for key, value in OmegaConf.to_container(params, resolve=True).items():
        override = parser.parse_override(f"{key}={value}")
        try:
            values = (
                list(override.sweep_iterator())
                if override.is_sweep_override()
                else [override.value()]
            )
        except HydraException:  # interval / tagged sweeps of optimizing sweepers: not a grid
            continue
        out[key] = values
    return out


def _expected_values(
    cfg: DictConfig, key: str, sweeps: dict[str, list[Any]], composed: ComposedOptions
) -> list[Any] | None:
    """A row / column key's values: swept directly, swept as a group (`method` for
    `method.name`, via each option's `name`), or fixed by the composed config."""
    if key == STAGE:
        return [str(label) for label in cfg.report.stages]
    if key == ROUNDS:
        return round_meta_samples(cfg)
    if key in sweeps:
        return sweeps[key]
    group, _, leaf = key.rpartition(".")
    if leaf == "name" and group in sweeps:
        return [_option_name(group, option) for option in sweeps[group]]
    for swept, options in sweeps.items():
        values = _set_by(cfg, swept, options, key, composed)  # a swept global group sets `key`
        if values is not None:
            return [NOT_APPLICABLE if v is None else v for v in values]
    value = _config_value(cfg, key)
    return None if value is None else [value]


def round_meta_samples(cfg: DictConfig) -> list[int] | None:
    """The meta-set sizes after each phase of the composed config's selection run: the
    warm-up's (`dataset.clean_size`), then `selector.per_round` more a round (the rest of the
    budget when null) up to `selector.budget`, as `selection_pipeline` adds them (a test runs the
    pipeline against this); None when the config selects nothing."""
    warmup = OmegaConf.select(cfg, "dataset.clean_size")
    budget = OmegaConf.select(cfg, "selector.budget")
    if not isinstance(budget, int) or not isinstance(warmup, int) or budget < warmup:
        return None
    step = OmegaConf.select(cfg, "selector.per_round") or budget
    if not isinstance(step, int) or step < 1:
        return None
    sizes = [warmup]
    while sizes[-1] < budget:
        sizes.append(min(sizes[-1] + step, budget))
    return sizes


def global_option_value(group: str, option: str, key: str) -> Any:
    """What an option of a `# @package _global_` group (`+pretraining=without`) sets `key` to,
    or None (not such a group, or the option leaves `key` alone)."""
    option_cfg = _global_option(group, option)
    return None if option_cfg is None else OmegaConf.select(option_cfg, key)


@cache
def _global_option(group: str, option: str) -> DictConfig | None:
    """The option file of a `# @package _global_` group, read once per process (the report asks
    for every override of every record), over the options of the same group its defaults list
    names (`conf/approach/l2rw_optimizer.yaml` extends `l2rw`); `override /group: ...` entries
    select other groups' options, whose values the file states where a report needs them."""
    path = Path(CONF_DIR, *group.split("."), f"{option}.yaml")
    if not path.is_file() or "@package _global_" not in path.read_text():
        return None
    own = OmegaConf.load(path)
    bases = [
        _global_option(group, entry)
        for entry in own.pop("defaults", [])
        if isinstance(entry, str) and entry != "_self_"
    ]
    return OmegaConf.merge(*(b for b in bases if b is not None), own)


def _option_name(group: str, option: str) -> Any:
    path = Path(CONF_DIR, *group.split("."), f"{option}.yaml")
    if not path.exists():
        return option
    return OmegaConf.load(path).get("name", option)
