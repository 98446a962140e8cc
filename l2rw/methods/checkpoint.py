"""Checkpoints for resuming a phase (model, optimizer, schedule, RNG, loop and rule state,
step) and model snapshots kept for selection.

Data order and augmentation are pure functions of (seed, step), so they need no saved state.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_checkpoint(folder: Path, name: str, state: dict[str, Any]) -> None:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    _save_atomic({**state, "rng": rng}, Path(folder) / name)


def load_checkpoint(folder: Path, name: str, device: torch.device) -> dict[str, Any] | None:
    path = Path(folder) / name
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    return state


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


def load_snapshot(folder: Path, tag: str, device: torch.device) -> dict[str, Any]:
    return torch.load(Path(folder) / f"{tag}.pt", map_location=device, weights_only=True)
