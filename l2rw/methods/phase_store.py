"""The files of one training phase, named, written and read in one place.

A phase `<name>` run in folder F (a job's run folder, or a shared cache folder) owns:

    F/checkpoint-<name>.pt                 its state to resume from, while it runs
    F/snapshots-<name>/step-<n>.pt         models kept for selection (the window after the best)
    F/snapshots-<name>/best.pt, final.pt   its best-validation and final models
    F/snapshots-<name>/rule-final.pt       its step rule's final state (a weight table, a net)
    F/phase-<name>.json                    its result, once it finished (a resumed job skips it)

The loop steps, evaluates and tells the store what to keep; `l2rw.methods.checkpoint` does the
atomic writes, the reads and the check that a checkpoint belongs to this run's setting.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from l2rw.methods.checkpoint import (
    load_checkpoint,
    load_rule_state,
    load_snapshot,
    remove_checkpoint,
    remove_snapshots_through,
    save_checkpoint,
    save_rule_state,
    save_snapshot,
    snapshot_steps,
)
from l2rw.tracking.record import write_json_atomic


@dataclass(frozen=True)
class PhaseStore:
    folder: Path
    name: str

    @property
    def snapshots(self) -> Path:
        return Path(self.folder) / f"snapshots-{self.name}"

    @property
    def checkpoint_name(self) -> str:
        return f"checkpoint-{self.name}.pt"

    @property
    def result_path(self) -> Path:
        return Path(self.folder) / f"phase-{self.name}.json"

    def load_checkpoint(self, device: torch.device, identity: dict) -> dict[str, Any] | None:
        """The phase's checkpoint (RNG state restored), or None: there is none to resume."""
        state = load_checkpoint(self.folder, self.checkpoint_name, device, identity)
        if state is not None and state.get("phase") != self.name:
            raise RuntimeError(
                f"{Path(self.folder) / self.checkpoint_name} belongs to phase "
                f"{state.get('phase')!r}, not {self.name!r}"
            )
        return state

    def save_checkpoint(self, state: dict[str, Any], identity: dict) -> None:
        save_checkpoint(self.folder, self.checkpoint_name, {"phase": self.name, **state}, identity)

    def remove_checkpoint(self) -> None:
        remove_checkpoint(self.folder, self.checkpoint_name)

    def save_model(self, tag: str, model: nn.Module) -> None:
        """Keep the model as snapshot `tag` (`step-<n>`, `best`, `final`)."""
        save_snapshot(self.snapshots, tag, model)

    def load_model_state(self, tag: str, device: torch.device) -> dict[str, Any]:
        return load_snapshot(self.snapshots, tag, device)

    def forget_steps_through(self, step: int) -> None:
        """Drop the `step-<n>` snapshots with n <= `step` (a later best makes them unread)."""
        remove_snapshots_through(self.snapshots, step)

    def snapshot_steps(self) -> list[int]:
        return snapshot_steps(self.snapshots)

    def save_rule_state(self, state: dict[str, Any]) -> None:
        save_rule_state(self.snapshots, state)

    def rule_state(self, device: torch.device) -> dict[str, Any] | None:
        return load_rule_state(self.snapshots, device)

    def save_result(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.result_path, result)

    def load_result(self) -> dict[str, Any] | None:
        """The finished phase's result, or None: it has not finished."""
        path = self.result_path
        return json.loads(path.read_text()) if path.exists() else None
