"""A record of the windows each rank trained on, for checking equivalences from outside.

With GOLDFINCH_BATCH_LOG=<dir>, every rank appends one JSON line per micro-batch to
<dir>/rank<R>.jsonl: the step, the micro-batch index, and per window its (source, epoch, shard,
window) and the sha1 of its tokens.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .base import Instruments

ENV = "GOLDFINCH_BATCH_LOG"


class Instrument(Instruments):
    def __init__(self, rank: int, value: str):
        self.file = Path(value) / f"rank{rank}.jsonl"
        self.file.parent.mkdir(parents=True, exist_ok=True)

    def batch(self, step, micro, windows, tokens):
        record = {"step": step, "micro": micro, "windows": windows.tolist(),
                  "sha1": [hashlib.sha1(np.ascontiguousarray(w, dtype=np.int64).tobytes()).hexdigest()
                           for w in tokens]}
        with self.file.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def read_steps(directory: Path) -> dict[int, list[str]]:
    """{step: sorted token digests of all ranks' windows}; a step logged twice (a run killed after
    reading ahead, then resumed) keeps its last record per (rank, micro-batch)."""
    latest: dict[tuple[int, int, int], list[str]] = {}
    for file in sorted(Path(directory).glob("rank*.jsonl")):
        rank = int(file.stem.removeprefix("rank"))
        for line in file.read_text().splitlines():
            record = json.loads(line)
            latest[(record["step"], rank, record["micro"])] = record["sha1"]
    steps: dict[int, list[str]] = {}
    for (step, _, _), digests in latest.items():
        steps.setdefault(step, []).extend(digests)
    return {step: sorted(d) for step, d in sorted(steps.items())}
