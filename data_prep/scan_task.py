"""The first pass over one unit, in a task: count and check its documents without tokenizing.

It returns a summary small enough for the driver (counts, the first few skipped documents, the
unit's lowest split hashes for the val top-up, a digest of its content), the unit's share of the
tokenizer-training sample, and the (digest, document) keys of the dedup shuffle, one array per
partition, which go straight to the dedup tasks without passing through the driver.
"""
from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .progress import TaskProgress
from .readers import ReadOptions, digest_of, read_piece
from .units import Unit

SHOWN_PER_REASON = 10  # skipped documents named on stderr per reason
KEY_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("unit", "<i8"), ("doc", "<i8")])


def unit_hash(seed: int, salt: str, relid: str) -> float:
    """A stable number in [0, 1) for a document id."""
    h = hashlib.blake2b(f"{seed}\0{salt}\0{relid}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big") / 2**64


@dataclass(frozen=True)
class ScanOptions:
    read: ReadOptions
    seed: int
    val_fraction: float
    candidates: int  # lowest split hashes kept for the val top-up (data.min_val_docs)
    partitions: int  # dedup partitions; 0 = no dedup
    sample_bytes: int  # this unit's share of the tokenizer sample; 0 = none


@dataclass
class UnitScan:
    unit: int
    records: int = 0
    documents: int = 0
    val: int = 0
    nbytes: int = 0
    repaired: int = 0
    lines: list[int] = field(default_factory=list)  # records per piece (JSONL line numbers)
    skipped: Counter = field(default_factory=Counter)
    examples: list[tuple[str, int, int, str]] = field(default_factory=list)  # (reason, piece, line, detail)
    lowest: list[tuple[float, int]] = field(default_factory=list)  # (split hash, document) ascending
    highest: tuple[float, int] | None = None
    digest: str = ""


class _Sample:
    """The lowest-hash train documents until `budget` bytes, holding no more than that."""

    def __init__(self, budget: int):
        self.budget, self.heap, self.size = budget, [], 0

    def offer(self, key: float, doc: int, text: str, nbytes: int) -> None:
        if self.budget <= 0 or (self.size >= self.budget and key > -self.heap[0][0]):
            return
        heapq.heappush(self.heap, (-key, doc, text, nbytes))
        self.size += nbytes
        while self.size - self.heap[0][3] >= self.budget:
            self.size -= heapq.heappop(self.heap)[3]

    def texts(self) -> list[str]:
        """In hash order until the budget (the last one cut), returned in document order."""
        chosen, used = [], 0
        for key, doc, text, nbytes in sorted(self.heap, key=lambda item: (-item[0], item[1])):
            take = min(nbytes, self.budget - used)
            if take <= 0:
                break
            chosen.append((doc, text[:take]))
            used += take
        return [text for _, text in sorted(chosen)]


def scan_unit(unit: Unit, opts: ScanOptions, progress: TaskProgress | None = None) -> tuple:
    """(UnitScan, sample texts, *dedup key arrays by partition)."""
    scan = UnitScan(unit.index)
    digest = hashlib.sha256()
    sample = _Sample(opts.sample_bytes)
    lowest: list[tuple[float, int]] = []  # a max-heap of the candidates, by negated hash
    keys: list[tuple[int, int, int]] = []
    shown: Counter = Counter()
    for p, piece in enumerate(unit.pieces):
        before = scan.records
        for rec in read_piece(piece, opts.read):
            scan.records += 1
            if rec.skip is not None:
                reason, detail = rec.skip
                scan.skipped[reason] += 1
                digest.update(f"skip\0{rec.relid}\0{reason}\n".encode("utf-8", "surrogatepass"))
                if shown[reason] < SHOWN_PER_REASON:
                    shown[reason] += 1
                    scan.examples.append((reason, p, rec.line, detail))
                continue
            doc, nbytes = scan.documents, (rec.data.nbytes if rec.text is None else len(rec.data))
            scan.documents += 1
            scan.nbytes += nbytes
            scan.repaired += rec.repaired
            d = digest_of(rec.data)
            digest.update(rec.relid.encode("utf-8", "surrogatepass") + b"\0" + d)
            if opts.partitions:
                keys.append((int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little"), doc))
            key = unit_hash(opts.seed, "split", rec.relid)
            if key < opts.val_fraction:
                scan.val += 1
            elif rec.text is not None:
                sample.offer(unit_hash(opts.seed, "tokenizer", rec.relid), doc, rec.text, nbytes)
            if opts.candidates:
                if len(lowest) < opts.candidates:
                    heapq.heappush(lowest, (-key, doc))
                elif key < -lowest[0][0]:
                    heapq.heapreplace(lowest, (-key, doc))
            if scan.highest is None or key > scan.highest[0]:
                scan.highest = (key, doc)
            if progress is not None:
                progress.add(nbytes=nbytes)
        scan.lines.append(scan.records - before)
    scan.lowest = sorted((-k, doc) for k, doc in lowest)
    scan.digest = digest.hexdigest()
    if progress is not None:
        progress.flush()
    return (scan, sample.texts(), *partition_keys(keys, unit.index, opts.partitions))


def partition_keys(keys: list[tuple[int, int, int]], unit: int, partitions: int) -> list[np.ndarray]:
    """The dedup keys of a unit, one array per partition (by the digest's first word)."""
    if not partitions:
        return []
    table = np.zeros(len(keys), KEY_DTYPE)
    if keys:
        raw = np.array(keys, dtype=np.uint64)
        table["hi"], table["lo"], table["doc"] = raw[:, 0], raw[:, 1], raw[:, 2].astype(np.int64)
    table["unit"] = unit
    part = table["hi"] % np.uint64(partitions)
    return [table[part == np.uint64(i)] for i in range(partitions)]
