"""The loop's and the job's results: one definition each, and a finished phase's stored result
reads back as the loop returned it (the phase files of earlier runs included)."""

import json

from l2rw.methods.phase_store import PhaseStore
from l2rw.methods.results import JobResult, LoopResult

METRICS = {"test_acc": 0.5, "test_acc_es": 0.6, "best_step": 4, "steps": 8, "confusion": [[1]]}
HIST = {"bins": [0.0, 0.2], "clean": [3.0], "flipped": [1.0]}


def test_a_stored_phase_result_reads_back_equal(tmp_path):
    store = PhaseStore(tmp_path, "warmup")
    result = LoopResult("completed", METRICS, HIST)
    store.save_result({"out": result.to_dict(), "steps": 8})
    saved = store.load_result()
    assert LoopResult.from_dict(saved["out"]) == result and saved["steps"] == 8
    # The file is the format earlier runs wrote: {"out": {status, metrics, weights_hist}, ...}.
    on_disk = json.loads((tmp_path / "phase-warmup.json").read_text())
    assert list(on_disk["out"]) == ["status", "metrics", "weights_hist"]
    assert PhaseStore(tmp_path, "round1").load_result() is None


def test_a_job_result_sets_the_record_keys_it_has():
    plain = JobResult("completed", METRICS, HIST)
    assert list(plain.record_fields()) == ["status", "metrics", "weights_hist"]
    selected = JobResult("completed", METRICS, HIST, data={"sizes": {}}, selection={"rounds": []})
    fields = selected.record_fields()
    assert list(fields) == ["status", "metrics", "weights_hist", "data", "selection"]
    assert fields["selection"] == {"rounds": []} and fields["data"] == {"sizes": {}}
