"""result.json: the one record of a job, written atomically, also when the job fails."""

import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from l2rw.errors import StorageError

RECORD_NAME = "result.json"
# A run folder's lock file (l2rw.tracking.locks), and the prefix of the folders inside it that
# force=true moves a run's earlier state into (superseded: reports skip them).
LOCK_NAME = ".lock"
REPLACED_PREFIX = "replaced-"
SCHEMA_VERSION = 1

# Overrides that say how and where a job runs, not what it computes: never part of its cell.
# `method.engine` is one of them: every engine computes the same exact meta-gradient (to float
# rounding, as the device does; tests/test_per_example.py and the engines' reference tests), so
# a sweep may switch to the faster engine and still resume, skip and share its cells and cached
# phases.
BOOKKEEPING_KEYS = frozenset(
    {
        "seed",
        "scale",
        "threads",
        "device",
        "force",
        "train.progress",
        "table",
        "table_name",
        "method.engine",
    }
)
BOOKKEEPING_GROUPS = ("paths.", "logger.", "hydra.")
# Of those, the ones that name a job's folder beside its cell (one folder per seed and scale).
RUN_DIR_KEYS = ("seed", "scale")
# The longest job folder name kept as is (a path component may have 255 bytes).
MAX_DIRNAME_BYTES = 200


def override_key(override: str) -> str:
    """'+a.b=1' -> 'a.b'."""
    return override.split("=", 1)[0].lstrip("+~")


def is_bookkeeping(key: str) -> bool:
    return key in BOOKKEEPING_KEYS or key.startswith(BOOKKEEPING_GROUPS)


def is_setting_key(key: str) -> bool:
    """Whether a dotted config key belongs in a run's setting: not bookkeeping, but the seed
    and scale, which a job's result depends on."""
    return key in RUN_DIR_KEYS or not is_bookkeeping(key)


def cell_of(overrides: list[str]) -> list[str]:
    """The overrides that define a table cell: everything but the seed and bookkeeping."""
    return sorted(o for o in overrides if not is_bookkeeping(override_key(o)))


def run_dirname(overrides: list[str]) -> str:
    """A sweep job's folder name: its cell plus seed and scale, sorted, comma-joined, any "/"
    percent-encoded.

    The sweep's `hydra.sweep.subdir` is this (`conf/hydra/default.yaml`), so a re-run that differs
    only in bookkeeping (device, threads, paths, W&B mode) finds the same folder, skips or resumes.
    """
    kept = [o for o in overrides if override_key(o) in RUN_DIR_KEYS]
    # A path in a value (dataset.options.path=/data/leaves) stays one folder: "/" as "%2F".
    name = ",".join(sorted(cell_of(overrides) + kept)).replace("/", "%2F")
    if len(name.encode()) <= MAX_DIRNAME_BYTES:
        return name
    # Too long for one path component (255 bytes on most filesystems): keep a readable head and
    # make the name unique with a hash of the whole.
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    head = name.encode()[: MAX_DIRNAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"


def setting_of(config: dict[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """A resolved config as {dotted key: value}, without bookkeeping (but the seed and scale,
    which a job's result depends on) and without the top-level groups in `ignore`: two runs with
    equal settings compute the same thing."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk({k: v for k, v in config.items() if k not in ignore}, "")
    return {k: v for k, v in flat.items() if is_setting_key(k)}


@contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """Turn a failed write of `path` (disk full, permissions, a vanished folder) into a
    StorageError: one paragraph that says the previous copy is intact and how to go on."""
    try:
        yield
    except OSError as err:
        raise StorageError(
            f"Could not write {path}: {err.strerror or err}. The previous copy of the file, if "
            "there was one, is intact and nothing half-written was left. Free disk space or fix "
            "the folder's permissions (or point paths.output_root=... elsewhere), then re-run the "
            "same command: it resumes from the last checkpoint."
        ) from None


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file,
    and a failed write (StorageError) leaves the previous file as it was."""
    path = Path(path)
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """`obj` as indented JSON, written atomically (`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_jsonable))


def json_number(value: float) -> float | str:
    """A float for a record: infinities as the strings "inf" / "-inf" (JSON has no infinity);
    the report reads them back (`l2rw.report.frame.as_number`)."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@dataclass
class RunRecord:
    """A job's record, `result.json`: what ran, where, and what it gave. `to_dict` is the file's
    content (keys in this order); `from_dict` reads a record of any age (a key it lacks keeps
    its default, one it does not know is dropped) or one rebuilt from a W&B run."""

    schema_version: int = SCHEMA_VERSION
    # "completed", "failed", "diverged" (a run), or "unreadable" (a file the report could not
    # parse).
    status: str = "failed"
    error: str | None = None
    # The reported model's metrics (test_acc, test_acc_es, best_val_acc, steps, ...).
    metrics: dict[str, Any] = field(default_factory=dict)
    # The resolved config (unresolved until the run resolved it), the command line's overrides
    # and the cell they name (the overrides but bookkeeping).
    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    cell: list[str] = field(default_factory=list)
    table: str | None = None
    scale: str | None = None
    seed: int | None = None
    method: str | None = None
    # The facts of the data the run ended with (sizes, realized noise, class counts).
    data: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    device: str | None = None
    # Seconds over all the launches of the run: a resumed run adds its interrupted launches'
    # time (and keeps their `started_at`); force=true starts both over.
    wall_time_s: float | None = None
    wandb_run_id: str | None = None
    started_at: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    output_dir: str | None = None
    # Histograms of the weights of clean and flipped examples; a selection pipeline's rounds.
    # Written only when set.
    weights_hist: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        saved = asdict(self)
        for key in OPTIONAL_RECORD_KEYS:
            if saved[key] is None:
                del saved[key]
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "RunRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


# The record's keys written only when set.
OPTIONAL_RECORD_KEYS = ("weights_hist", "selection")


def read_record(run_dir: Path) -> RunRecord | None:
    path = Path(run_dir) / RECORD_NAME
    if not path.exists():
        return None
    with path.open() as fh:
        return RunRecord.from_dict(json.load(fh))


def write_record(run_dir: Path, record: RunRecord) -> None:
    write_json_atomic(Path(run_dir) / RECORD_NAME, record.to_dict())


def git_commit() -> str | None:
    """The commit of the code that ran (with '-dirty' when the tree has changes), if in git.

    A tree shipped without its .git folder (copied to a cluster or a GPU box) has no history to
    ask; there the commit it was copied from can be given in the environment variable
    L2RW_GIT_COMMIT.
    """
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("L2RW_GIT_COMMIT") or None
    return f"{sha}-dirty" if dirty else sha


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name where the system gives one (Linux), with its architecture,
    e.g. "Intel Xeon Processor (x86_64)"; the architecture alone elsewhere."""
    arch = platform.machine() or platform.processor() or "unknown"
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return arch
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            name = " ".join(value.replace("(R)", "").replace("(TM)", "").split())
            return f"{name} ({arch})"
    return arch


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{cpu_name()} x{torch.get_num_threads()} threads"


def environment() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
