"""Checkpoints for resuming: model, optimizer, schedule, RNG states, loop state, step.

Data order and augmentation are pure functions of (seed, step), so they need no saved state.
"""

from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    path = Path(run_dir) / CHECKPOINT_NAME
    tmp = path.with_suffix(".pt.tmp")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({**state, "rng": rng}, tmp)
    tmp.replace(path)


def load_checkpoint(run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    return state


def remove_checkpoint(run_dir: Path) -> None:
    (Path(run_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)
