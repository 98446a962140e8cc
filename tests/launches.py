"""Reading back how a launch trained: the line each phase logs when its training ends
(`l2rw.methods.loop.LAUNCH_LINE`), so a test can tell a resumed run from one that started over."""

import logging

import pytest

from l2rw.methods.loop import LAUNCH_PATTERN


def phase_launches(text: str) -> list[tuple[str, int, int, int]]:
    """(phase, started at step, optimizer steps in this launch, phase length) for each phase
    that ended in `text` (a train.log, or captured log messages), in order."""
    return [(p, int(a), int(n), int(t)) for p, a, n, t in LAUNCH_PATTERN.findall(text)]


def optimizer_steps(text: str) -> int:
    """Optimizer steps taken over every phase that ended in `text`."""
    return sum(n for _, _, n, _ in phase_launches(text))


def capture_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Let caplog see l2rw's INFO lines (the launch lines among them)."""
    caplog.set_level(logging.INFO, logger="l2rw")
    return caplog
