"""Counting the ATen operations a piece of code dispatches, for the benchmarks' `--count-ops`.

Only operations that do arithmetic are counted: views, aliases, detaches and autograd's shape
checks launch no kernel. On a GPU at small batch sizes every counted operation is at least one
kernel launch and steps are bound by launches, so ratios of counts are a hardware-independent
account of timed ratios there.
"""

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

NO_KERNEL = (
    "alias",
    "as_strided",
    "detach",
    "expand",
    "_has_same_storage_numel",
    "is_same_size",
    "permute",
    "_reshape_alias",
    "squeeze",
    "t.default",
    "transpose",
    "_unsafe_view",
    "unsqueeze",
    "view",
)


class OpCounter(TorchDispatchMode):
    """`with OpCounter() as c: ...`; then `c.arithmetic` operations were dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def arithmetic(self) -> int:
        return sum(n for op, n in self.counts.items() if not any(k in op for k in NO_KERNEL))
