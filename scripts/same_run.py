"""Whether two output folders hold the same runs: for a change that must not alter behaviour.

Compares every `metrics.jsonl` byte for byte, every `*.pt` file (models, best / final
snapshots, per-example weights, step-rule and optimizer state) tensor by tensor, and the
`metrics` of every `result.json`, at the same relative paths under the two folders (run folders
and the shared warm-up / Stage A cache alike). Prints one line per file and a summary; exits 1
on any difference or on a file that only one folder has.

    python scripts/same_run.py BEFORE_OUTPUTS AFTER_OUTPUTS
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

PATTERNS = ("metrics.jsonl", "*.pt", "result.json")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def same_file(a: Path, b: Path) -> bool:
    if a.name == "metrics.jsonl":
        return a.read_bytes() == b.read_bytes()
    if a.suffix == ".pt":
        load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
        return _equal(load(a), load(b))
    return _equal(json.loads(a.read_text())["metrics"], json.loads(b.read_text())["metrics"])


def files(root: Path) -> set[Path]:
    return {p.relative_to(root) for pattern in PATTERNS for p in root.rglob(pattern)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    left, right = files(args.before), files(args.after)
    bad = 0
    for rel in sorted(left | right, key=str):
        if rel not in left or rel not in right:
            status = f"only in {args.before if rel in left else args.after}"
        else:
            status = "same" if same_file(args.before / rel, args.after / rel) else "DIFFERENT"
        bad += status != "same"
        print(f"{status:>9}  {rel}")
    print(f"{len(left | right) - bad} of {len(left | right)} files the same")
    return 1 if bad or not left else 0


if __name__ == "__main__":
    sys.exit(main())
