"""OmegaConf resolvers the configs use, registered once at import of the entrypoint."""

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from l2rw.errors import ConfigError


def by_seed(values: Any, *, _root_: Any) -> Any:
    """`${by_seed:[a,b,c]}`: the value of trial `seed` (seed 0 is a paper's trial 1).

    For settings a paper fixes per trial, e.g. L2RW's BackgroundFlip class of trials 1-5.
    """
    seed, values = int(_root_.seed), list(values or [])
    if not values:
        raise ConfigError(
            "a paper's protocol fixes it per trial, but this dataset's config lists no per-trial "
            "values (e.g. dataset.background_trial_classes=[0,1,3,5,7]); give that list, or set "
            "the value itself on the command line."
        )
    if not 0 <= seed < len(values):
        raise ConfigError(
            f"seed={seed} has no per-trial value in {values}: the paper fixes this setting for "
            f"trials 1-{len(values)} only, so use seeds 0-{len(values) - 1} or set the value "
            "itself on the command line."
        )
    return values[seed]


def run_dirname(overrides: Any) -> str:
    """`${run_dirname:${hydra.overrides.task}}`: a sweep job's folder (l2rw.tracking.record)."""
    from l2rw.tracking.record import run_dirname as dirname

    return dirname(list(overrides))


def sweep_folder(table_name: str | None) -> str:
    """`${sweep_folder:${table_name}}`: a sweep's folder under the output root, its table's name
    (`multirun` for a sweep that is no table)."""
    return table_name or "multirun"


def dataset_info(field: str, *, _root_: Any) -> Any:
    """`${dataset_info:FIELD}`: a protocol value computed from the dataset's own files
    (`l2rw.data.describe`)."""
    from l2rw.data.describe import dataset_info as info

    return info(field, _root_=_root_)


def data_label(*, _root_: Any) -> str:
    """`${data_label:}`: the dataset's name, and with a file or folder of the user's
    (`dataset.options.path`) its name too: `folder-leaves`, `arrays-digits`, `mnist`."""
    path = OmegaConf.select(_root_, "dataset.options.path", default=None)
    name = str(_root_.dataset.name)
    return name if not path else f"{name}-{Path(str(path)).expanduser().resolve().stem}"


RESOLVERS = {
    "by_seed": by_seed,
    "run_dirname": run_dirname,
    "sweep_folder": sweep_folder,
    "dataset_info": dataset_info,
    "data_label": data_label,
}


def register_resolvers() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
