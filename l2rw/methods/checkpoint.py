"""Checkpoints for resuming a phase (model, optimizer, schedule, RNG, loop and rule state,
step) and model snapshots kept for selection.

Data order and augmentation are pure functions of (seed, step), so they need no saved state.
A checkpoint carries the setting that produced it (`setting_of` the run's config, or of what
determines a shared warm-up) and the code's commit: resuming under another setting is refused
with the keys that differ, so one run's state is never continued under another's config. Files
are loaded with `weights_only=True`; one that cannot be read is moved aside, not deleted, and
its phase starts over.
"""

import collections
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from l2rw.errors import ConfigError
from l2rw.tracking.record import git_commit, is_setting_key, storage_errors

log = logging.getLogger(__name__)

# What a checkpoint holds besides tensors and plain containers: MultiStepLR keeps its milestones
# in a Counter.
torch.serialization.add_safe_globals([collections.Counter])

# Differing keys listed in a refusal before it says "and N more".
_SHOWN_KEYS = 12


def _save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file, then rename: a failed write leaves the previous file intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(obj, tmp)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def checkpoint_identity(setting: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint carries to say which run wrote it: its setting and the code's commit."""
    return {"setting": setting, "git_commit": git_commit()}


def save_checkpoint(folder: Path, name: str, state: dict[str, Any], identity: dict) -> None:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    _save_atomic({**state, "rng": rng, "identity": identity}, Path(folder) / name)


def load_checkpoint(
    folder: Path, name: str, device: torch.device, identity: dict
) -> dict[str, Any] | None:
    """The checkpoint `name` in `folder`, RNG state restored; None when there is none or it
    could not be read (then it is moved aside as `<name>.unreadable-<time>`).

    Raises ConfigError when it was written under a setting other than `identity`'s.
    """
    path = Path(folder) / name
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        saved = state["identity"]["setting"]
    except Exception as err:  # truncated, corrupt, foreign or pre-identity files alike
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.unreadable-{stamp}")
        path.replace(aside)
        log.warning(
            "The checkpoint %s could not be read (%s: %s); it was moved to %s and this phase "
            "starts over.",
            path,
            type(err).__name__,
            str(err).strip().splitlines()[0] if str(err).strip() else "",
            aside.name,
        )
        return None
    _refuse_other_setting(path, saved, identity["setting"])
    commit = state["identity"].get("git_commit")
    if commit != identity["git_commit"]:
        log.warning(
            "Resuming %s, written by commit %s, with commit %s.",
            path,
            commit,
            identity["git_commit"],
        )
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    return state


def _refuse_other_setting(path: Path, saved: dict, setting: dict) -> None:
    # A checkpoint written before a key became bookkeeping (method.engine) still carries it.
    saved = {k: v for k, v in saved.items() if is_setting_key(k)}
    keys = sorted(k for k in saved.keys() | setting.keys() if saved.get(k) != setting.get(k))
    if not keys:
        return
    shown = "; ".join(
        f"{k}: {saved.get(k, '(absent)')!r} in the checkpoint, {setting.get(k, '(absent)')!r} now"
        for k in keys[:_SHOWN_KEYS]
    )
    more = f"; and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    raise ConfigError(
        f"The checkpoint {path} was written by a run with a different configuration, so this run "
        f"will not resume from it ({len(keys)} key(s) differ: {shown}{more}). Re-run with the "
        "configuration it was written with to resume it, or pass force=true to start this run "
        "over (the folder's earlier state is moved aside, not deleted)."
    )


def remove_checkpoint(folder: Path, name: str) -> None:
    (Path(folder) / name).unlink(missing_ok=True)


def save_snapshot(folder: Path, tag: str, model: nn.Module) -> None:
    """The model's state as `<tag>.pt` (`step-<n>`, `best`, `final`), written atomically."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    _save_atomic(state, Path(folder) / f"{tag}.pt")


def save_rule_state(folder: Path, state: dict[str, Any]) -> None:
    """A step rule's final state (e.g. the per-example weight table) as `rule-final.pt`."""
    _save_atomic(state, Path(folder) / "rule-final.pt")


def load_rule_state(folder: Path, device: torch.device) -> dict[str, Any] | None:
    path = Path(folder) / "rule-final.pt"
    return torch.load(path, map_location=device, weights_only=True) if path.exists() else None


def snapshot_steps(folder: Path) -> list[int]:
    """Steps of the `step-<n>` snapshots in `folder`, ascending."""
    return sorted(int(p.stem.split("-", 1)[1]) for p in Path(folder).glob("step-*.pt"))


def remove_snapshots_through(folder: Path, step: int) -> None:
    """Delete the `step-<n>` snapshots with n <= `step` (none is read once a later best exists)."""
    for n in snapshot_steps(folder):
        if n <= step:
            (Path(folder) / f"step-{n}.pt").unlink(missing_ok=True)


def load_snapshot(folder: Path, tag: str, device: torch.device) -> dict[str, Any]:
    return torch.load(Path(folder) / f"{tag}.pt", map_location=device, weights_only=True)
