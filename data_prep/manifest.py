"""manifest.json: the data dir's table of contents, written last and atomically.

It holds nothing that depends on how a run went (no times, hosts or reuse counts), so an
interrupted-then-resumed run and an uninterrupted one leave byte-identical manifests. The trainer
reads `shards[*].name/samples/tokens` (the split is the name's prefix before the first '-').
"""
from __future__ import annotations

import json
from pathlib import Path

from . import atomic
from .sharding import SPLITS, Plan

FORMAT = "goldfinch-data/1"
SHARD_KEYS = ("name", "split", "sha256", "samples", "tokens", "bytes", "file_bytes")


def build(plan: Plan, records: list[dict], config: dict, tokenizer_info: dict) -> dict:
    shards = [{k: r[k] for k in SHARD_KEYS} for r in records]
    splits = {}
    for split in SPLITS:
        mine = [s for s in shards if s["split"] == split]
        splits[split] = {"shards": len(mine), "documents": sum(s["samples"] for s in mine),
                         "tokens": sum(s["tokens"] for s in mine), "bytes": sum(s["bytes"] for s in mine)}
    totals = {
        "documents": sum(s["samples"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": len(shards),
        "skipped_documents": sum(plan.skipped.values()),
        "skipped": dict(sorted(plan.skipped.items())),
        "replaced_invalid_utf8": plan.repaired,
    }
    return {
        "format": FORMAT,
        "shards": shards,
        "splits": splits,
        "totals": totals,
        "skipped_examples": dict(sorted(plan.skip_examples.items())),
        "tokenizer": tokenizer_info,
        "input": {"resolved": plan.corpus.description, "files": len(plan.corpus.files),
                  "digest": plan.input_digest},
        "config": config,
    }


def write(out: Path, manifest: dict) -> None:
    atomic.write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
