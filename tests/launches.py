"""Reading back how a launch trained: the line each phase logs when its training ends
(`l2rw.methods.loop.LAUNCH_LINE`), so a test can tell a resumed run from one that started over."""

import logging
import re

import pytest

# LAUNCH_LINE with its fields captured: phase, start step, optimizer steps, phase length.
_LAUNCH = re.compile(
    r"Phase (\S+): started at step (\d+), (\d+) optimizer steps in this launch, of (\d+)\."
)


def phase_launches(text: str) -> list[tuple[str, int, int, int]]:
    """(phase, started at step, optimizer steps in this launch, phase length) for each phase
    that ended in `text` (a train.log, or captured log messages), in order."""
    return [(p, int(a), int(n), int(t)) for p, a, n, t in _LAUNCH.findall(text)]


def optimizer_steps(text: str) -> int:
    """Optimizer steps taken over every phase that ended in `text`."""
    return sum(n for _, _, n, _ in phase_launches(text))


def capture_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Let caplog see l2rw's INFO lines (the launch lines among them)."""
    caplog.set_level(logging.INFO, logger="l2rw")
    return caplog
