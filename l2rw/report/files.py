"""Write a table's output files all or nothing: every temp file first, then the renames."""

import os
import tempfile
from pathlib import Path


def write_all(directory: Path, files: dict[str, bytes]) -> list[Path]:
    """Write {name: content} into `directory`; readers never see a half-written file, and a
    failure before the renames leaves the previous results untouched."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, content in files.items():
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            staged.append((tmp, directory / name))
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.chmod(tmp, 0o644)
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [final for _, final in staged]
