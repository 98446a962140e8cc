"""Methods and pipelines.

`METHODS` maps a method name to the function that builds its step rule for a run's data; a job
either trains with that rule, then optionally fine-tunes (`l2rw.methods.stages`), or, with a
selector, runs the selection pipeline that trains with it in every phase
(`l2rw.methods.selection`).
"""

from l2rw.methods.results import JobResult
from l2rw.registry import Registry

METHODS = Registry("method", group="method")

from l2rw.methods import mwnet, noisy_labels, reweighting  # noqa: E402,F401  (register the step rules)


def run_pipeline(ctx) -> JobResult:
    """The job: train with the method (then fine-tune, when asked), or select its meta set first
    when a selector is set."""
    from l2rw.methods.selection import selection_pipeline
    from l2rw.methods.stages import method_pipeline

    if ctx.cfg.selector.name == "none":
        return method_pipeline(ctx)
    return selection_pipeline(ctx)
