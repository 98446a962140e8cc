"""What a training phase and a whole job hand back: one definition each, written and read here.

`LoopResult` is a phase's loop output (`train_loop`), stored as a finished phase's result
(`PhaseStore.save_result`) and read back on resume. `JobResult` is what a job's pipeline gives
its record (`result.json`): the status, the metrics of the model it reports, the weight
histograms and, for a pipeline that changes the splits or selects, the data's facts and the
selection.
"""

from dataclasses import asdict, dataclass
from typing import Any

from l2rw.tracking.record import RunRecord


@dataclass
class LoopResult:
    # "completed" or "diverged".
    status: str
    # test_acc (final model), test_acc_es / best_val_acc / best_step (best hyper-validation
    # evaluation), steps, confusions, and the starting model's accuracies when evaluated.
    metrics: dict[str, Any]
    # Histograms of the weights of clean and flipped examples (L2RW Figure 3).
    weights_hist: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "LoopResult":
        return cls(**saved)


@dataclass
class JobResult:
    status: str
    metrics: dict[str, Any]
    weights_hist: dict[str, Any]
    # The facts of the data the job ended with (selection moves examples into the meta set);
    # None: the data it started with.
    data: dict[str, Any] | None = None
    # The selection pipeline's rounds, meta samples and diagnostics.
    selection: dict[str, Any] | None = None

    def fill(self, record: RunRecord) -> None:
        """Set the record's fields this result gives."""
        record.status = self.status
        record.metrics = self.metrics
        record.weights_hist = self.weights_hist
        if self.data is not None:
            record.data = self.data
        record.selection = self.selection
