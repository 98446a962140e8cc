"""scripts/collect_records.py: records copied under the folder a sweep would give them today,
machine paths replaced."""

import importlib.util
import json
import sys
from pathlib import Path

from test_report_fakes import make_record, write_record

from l2rw.tracking.record import run_dirname

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "collect_records.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("collect_records", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_job_named_by_a_bookkeeping_override_joins_its_cells_folder(tmp_path, monkeypatch):
    """A job run with `method.engine=per_example` (bookkeeping since) had it in its folder's
    name; collected, it lands where the same job with any engine lands, with no machine path."""
    record = make_record(seed=3, extra_overrides=("method.engine=per_example",))
    plain = make_record(seed=3)
    job = write_record(tmp_path / "outputs", record, name="method.engine=per_example,seed=3")
    script = _load_script()
    monkeypatch.setattr(script, "RESULTS", tmp_path / "records")
    monkeypatch.setattr(sys, "argv", ["collect", str(tmp_path / "outputs"), record["table"]])
    script.main()
    (collected,) = (tmp_path / "records" / record["table"]).iterdir()
    assert collected.name == run_dirname(plain["overrides"]) != job.name
    text = (collected / "result.json").read_text()
    assert "/secret/machine/datasets" not in text and json.loads(text)["seed"] == 3
