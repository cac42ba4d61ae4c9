"""The driver's part of the plan: fold the units' scan summaries into per-unit build decisions.

Everything here is O(units): line and document numbering by prefix sums over units, the val
top-up (the `data.min_val_docs` lowest split hashes over the units' few candidates), the first
skipped documents per reason, and a digest of the whole input that resume compares.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from .readers import source_of
from .scan_task import UnitScan
from .sources import Corpus, JSONL
from .units import Unit

EXAMPLES_PER_REASON = 5  # in the manifest


@dataclass
class Plan:
    corpus: Corpus
    units: list[Unit]
    scans: list[UnitScan]
    documents: int = 0
    nbytes: int = 0
    repaired: int = 0
    skipped: Counter = field(default_factory=Counter)
    skip_lines: list[str] = field(default_factory=list)  # shown on stderr, in input order
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    first_docs: list[int] = field(default_factory=list)
    first_lines: list[tuple[int, ...]] = field(default_factory=list)
    to_val: dict[int, frozenset] = field(default_factory=dict)
    to_train: dict[int, frozenset] = field(default_factory=dict)
    input_digest: str = ""


def _numbering(plan: Plan) -> None:
    lines: Counter = Counter()
    doc = 0
    for unit, scan in zip(plan.units, plan.scans):
        plan.first_docs.append(doc)
        doc += scan.documents
        firsts = []
        for piece, count in zip(unit.pieces, scan.lines):
            firsts.append(lines[piece.file.path] + 1)
            if piece.file.kind == JSONL:
                lines[piece.file.path] += count
        plan.first_lines.append(tuple(firsts))


def _skips(plan: Plan, shown_per_reason: int) -> None:
    shown: Counter = Counter()
    for unit, scan, firsts in zip(plan.units, plan.scans, plan.first_lines):
        plan.skipped.update(scan.skipped)
        for reason, p, line, detail in scan.examples:
            source = source_of(unit.pieces[p], line, firsts[p])
            shown[reason] += 1
            if shown[reason] <= shown_per_reason:
                plan.skip_lines.append(f"data_prep: skipped {source} ({reason}): {detail}")
            examples = plan.skip_examples.setdefault(reason, [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append(f"{source}: {detail}")
    for reason, n in sorted(plan.skipped.items()):
        if n > shown_per_reason:
            plan.skip_lines.append(f"data_prep: ... {n - shown_per_reason} more skipped ({reason})")


def _top_up(plan: Plan, val_fraction: float, min_val_docs: int) -> None:
    """Val gets at least min_val_docs documents (the lowest split hashes) whenever val_fraction > 0;
    train always keeps one (the highest hash) when every document hashed to val. Decided before
    dedup, so a top-up document that is a later copy of another is dropped with it."""
    if val_fraction <= 0 or plan.documents == 0:
        return
    val = sum(s.val for s in plan.scans)
    want = min(min_val_docs, plan.documents - 1)
    if val < want:
        lowest = sorted((key, s.unit, doc) for s in plan.scans for key, doc in s.lowest)[:want]
        for _, unit, doc in lowest:
            plan.to_val[unit] = plan.to_val.get(unit, frozenset()) | {doc}
        val = want
    if val >= plan.documents:
        _, unit, doc = max((s.highest[0], s.unit, s.highest[1]) for s in plan.scans if s.highest)
        plan.to_train[unit] = frozenset({doc})


def make_plan(corpus: Corpus, units: list[Unit], scans: list[UnitScan], cfg, shown_per_reason: int) -> Plan:
    plan = Plan(corpus, units, scans)
    plan.documents = sum(s.documents for s in scans)
    plan.nbytes = sum(s.nbytes for s in scans)
    plan.repaired = sum(s.repaired for s in scans)
    _numbering(plan)
    _skips(plan, shown_per_reason)
    _top_up(plan, cfg.val_fraction, cfg.min_val_docs)
    digest = hashlib.sha256()
    for unit, scan in zip(units, scans):
        body = [[p.file.relpath, p.start, p.end] for p in unit.pieces]
        digest.update(json.dumps([body, scan.digest, scan.records]).encode())
    plan.input_digest = digest.hexdigest()
    return plan


def unit_digest(plan: Plan, unit: int, config: dict, tokenizer_sha: str) -> str:
    """Everything that decides one unit's shards (the whole input's digest included, since the
    dedup and the val top-up look across units)."""
    body = [plan.input_digest, unit, config, tokenizer_sha]
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
