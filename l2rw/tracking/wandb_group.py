"""A run's W&B group: its table cell. Written by the sink (l2rw.tracking.sinks), read back by
the report's W&B source (l2rw.report.wandb_source); this module is the format's one definition.

The group is `<table>/<override>/<override>/...` (`adhoc/...` outside a table), so W&B groups a
cell's seeds. W&B caps a group at 128 characters, and an override may hold a `/` itself (a
path), so where the group would not give the cell back whole (too long, a `/` in a value, or a
group the user chose with logger.wandb.group) the full cell also goes into the run's config
under CELL_KEY, and the group is shortened with a hash of the whole so that two long cells
never share a group.
"""

import hashlib
from typing import Any

# W&B's limit on the length of a run's group.
GROUP_LIMIT = 128
# The run config key that holds the full cell when the group does not.
CELL_KEY = "l2rw_cell"
ADHOC = "adhoc"
SEPARATOR = "/"


def format_group(
    table: str | None, cell: list[str], chosen: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(the run's group, what to add to its config): the config addition is {CELL_KEY: cell}
    when the group alone would not give the cell back, else empty. `chosen` is a group the user
    set (logger.wandb.group), used as is."""
    cell = list(cell)
    full = SEPARATOR.join([table or ADHOC, *cell])
    group = chosen or full
    if len(group) > GROUP_LIMIT:
        digest = hashlib.sha256(group.encode()).hexdigest()[:12]
        group = f"{group[: GROUP_LIMIT - len(digest) - 1]}#{digest}"
    whole = parse_group(group, table, {}) == cell
    return group, {} if whole else {CELL_KEY: cell}


def parse_group(group: str | None, table: str | None, config: dict[str, Any]) -> list[str]:
    """The cell of a run from its group and (unwrapped) config: the config's CELL_KEY when
    there, else the group's parts after the table; [] for a group not made by format_group."""
    stored = config.get(CELL_KEY)
    if isinstance(stored, list | tuple):
        return [str(override) for override in stored]
    prefix = f"{table or ADHOC}{SEPARATOR}"
    if not group or not group.startswith(prefix):
        return []
    return group[len(prefix) :].split(SEPARATOR)
