"""Loading a local torchvision state dict into a model, all but its classifier.

Nothing is ever downloaded: `weights_path` names a file already on disk (e.g. one of torchvision's
`~/.cache/torch/hub/checkpoints/*.pth`). Every problem with it (no such file, unreadable, not a
state dict, keys or shapes that do not fit) is a one-paragraph ConfigError that says how to fix it.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from l2rw.errors import ConfigError

# A BatchNorm's batch counter: absent from checkpoints older than PyTorch 0.4 (resnet34-333f7ec4).
_OPTIONAL = "num_batches_tracked"


def _fix(what: str, files: str, path: Path) -> str:
    return (
        f"Fix: set model.options.weights_path to a local copy of a state dict of {what} (e.g. "
        f"{files}; copy it from a machine where torchvision downloaded it into "
        f"~/.cache/torch/hub/checkpoints/), or to null to train from a random init (this run "
        f"reads {path}; nothing is downloaded)."
    )


def _listed(label: str, items: list[str]) -> str:
    return f"{label} {len(items)}: {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"


def load_state_except(
    model: nn.Module,
    weights_path: str | os.PathLike,
    skip_prefixes: tuple[str, ...],
    what: str,
    files: str,
    alike: str = "",
) -> list[str]:
    """Load every tensor of the state dict saved at `weights_path` into `model`, except those
    whose key starts with one of `skip_prefixes` (the classifier, e.g. "fc."), in the file and in
    the model alike; returns the keys loaded. The other keys must match `model.state_dict()`'s
    names and shapes exactly (a BatchNorm's `num_batches_tracked` may be absent).

    `what` names the network in messages ("torchvision's ResNet-34"), `files` the
    checkpoint files that fit it, `alike` the architectures whose checkpoints are easily
    confused with it ("ResNet-18/50")."""
    path = Path(weights_path).expanduser()
    fix = _fix(what, files, path)
    if not path.is_file():
        raise ConfigError(
            f"model.options.weights_path={weights_path}: no such file"
            f"{'' if path.is_absolute() else f' (relative to {Path.cwd()})'}. {fix}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and tensor errors all mean "not a usable state dict"
        detail = next(iter(str(err).strip().splitlines()), "")
        raise ConfigError(
            f"model.options.weights_path={weights_path} cannot be read as a PyTorch state dict "
            f"({type(err).__name__}: {detail}). {fix}"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ConfigError(
            f"model.options.weights_path={weights_path} holds a {type(state).__name__}, not a "
            f"state dict (a mapping of parameter names to tensors). {fix}"
        )

    def kept(key: str) -> bool:
        return not key.startswith(skip_prefixes)

    loaded = {k: v for k, v in state.items() if kept(k)}
    expected = {k: v for k, v in model.state_dict().items() if kept(k)}
    missing = sorted(k for k in expected.keys() - loaded.keys() if not k.endswith(_OPTIONAL))
    unexpected = sorted(loaded.keys() - expected.keys())
    shapes = sorted(
        f"{k} {tuple(loaded[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in loaded.keys() & expected.keys()
        if loaded[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        problems = [
            _listed(label, items)
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", shapes),
            )
            if items
        ]
        examples = ", ".join(list(expected)[:2])
        skipped = ", ".join(p.rstrip(".") for p in skip_prefixes)
        skipped += " is" if len(skip_prefixes) == 1 else " are"
        raise ConfigError(
            f"model.options.weights_path={weights_path} does not fit {what} (keys such as "
            f"{examples}; {skipped} not loaded): {'; '.join(problems)}. It may be another "
            f"architecture's checkpoint{f' ({alike})' if alike else ''} or a wrapped one (keys "
            f"prefixed 'module.'). {fix}"
        )
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)
