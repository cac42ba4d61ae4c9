"""metrics.jsonl: one JSON object per optimizer step (and per validation), appended and flushed."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from ..errors import PipelineError


class MetricsLog:
    """Append-only JSON lines. On resume, lines past the restored step are dropped, so the file
    reads as one uninterrupted run. A kill during a write can leave the last line torn; that line
    is dropped with a warning (its step comes again after the resume). A bad line anywhere else
    is damage this file cannot explain, and stops the run naming the line."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def _records(self) -> list[dict]:
        lines = [(n, line) for n, line in enumerate(self.path.read_text().splitlines(), 1) if line.strip()]
        records = []
        for i, (number, line) in enumerate(lines):
            try:
                records.append(json.loads(line))
            except ValueError as err:
                if i < len(lines) - 1:
                    raise PipelineError(f"{self.path} line {number} is not JSON ({err}); only the "
                                        "last line can be torn by a kill, so the file was damaged: "
                                        "remove the line or the file to go on") from err
                warnings.warn(f"{self.path}: dropping its torn last line {number} (a kill during "
                              "a write)", stacklevel=3)
        return records

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in self._records() if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(clean) + "\n")
            fh.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return self._records()
