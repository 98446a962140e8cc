"""The loop's and the job's results: one definition each, and a finished phase's stored result
reads back as the loop returned it (the phase files of earlier runs included)."""

import json

from l2rw.methods.phase_store import PhaseStore
from l2rw.methods.results import JobResult, LoopResult
from l2rw.tracking.record import RunRecord, read_record, write_record

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
    plain = RunRecord(data={"sizes": {"train": 9}})
    JobResult("completed", METRICS, HIST).fill(plain)
    assert (plain.status, plain.metrics, plain.weights_hist) == ("completed", METRICS, HIST)
    assert plain.data == {"sizes": {"train": 9}} and plain.selection is None
    assert "selection" not in plain.to_dict()
    selected = RunRecord()
    JobResult("completed", METRICS, HIST, data={"sizes": {}}, selection={"rounds": []}).fill(
        selected
    )
    assert selected.selection == {"rounds": []} and selected.data == {"sizes": {}}


def test_a_record_is_written_and_read_through_one_definition(tmp_path):
    """The file's keys in the order earlier runs wrote them; a record of any age reads back,
    with the keys it lacks at their defaults and ones it does not know dropped."""
    record = RunRecord(status="completed", metrics=METRICS, weights_hist=HIST, seed=3)
    write_record(tmp_path, record)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert list(on_disk)[:4] == ["schema_version", "status", "error", "metrics"]
    assert list(on_disk)[-3:] == ["output_dir", "weights_hist", "finished_at"]
    assert read_record(tmp_path) == record
    old = {"status": "failed", "error": "boom", "metrics": {}, "a_key_of_the_future": 1}
    assert RunRecord.from_dict(old) == RunRecord(status="failed", error="boom")
