"""manifest.json's contents: the data dir's table of contents (shard_format reads and writes it).

It holds nothing that depends on how a run went (no times, hosts, worker counts or reuse), so an
interrupted-then-resumed run and an uninterrupted one, on any number of workers, leave
byte-identical manifests. The trainer reads `shards[*].name/samples/tokens` (the split is the
name's prefix before the first '-'); `unit` says which work unit built a shard.
"""
from __future__ import annotations

from .plan import Plan
from .shard_format import FORMAT, SHARD_KEYS, SPLITS


def build(plan: Plan, shards: list[dict], records: list[dict], config: dict, tokenizer_info: dict) -> dict:
    shards = [{k: s[k] for k in SHARD_KEYS} for s in shards]
    splits = {}
    for split in SPLITS:
        mine = [s for s in shards if s["split"] == split]
        splits[split] = {"shards": len(mine), "documents": sum(s["samples"] for s in mine),
                         "tokens": sum(s["tokens"] for s in mine), "bytes": sum(s["bytes"] for s in mine)}
    skipped = plan.skipped.copy()
    examples = {k: list(v) for k, v in plan.skip_examples.items()}
    duplicates = sum(r["duplicates"] for r in records)
    if duplicates:
        skipped["duplicate"] = duplicates
        shown = [s for r in records for s in r["duplicate_examples"]][:5]
        examples["duplicate"] = [f"{s}: same text as an earlier document" for s in shown]
    totals = {
        "documents": sum(s["samples"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": len(shards),
        "skipped_documents": sum(skipped.values()),
        "skipped": dict(sorted(skipped.items())),
        "replaced_invalid_utf8": plan.repaired,
    }
    if plan.corpus.files and plan.corpus.files[0].kind == "binidx":
        totals["stripped_eot"] = sum(r["stripped_eot"] for r in records)
    return {
        "format": FORMAT,
        "shards": shards,
        "splits": splits,
        "totals": totals,
        "skipped_examples": dict(sorted(examples.items())),
        "tokenizer": tokenizer_info,
        "input": {"resolved": plan.corpus.description, "files": len(plan.corpus.files),
                  "units": len(plan.units), "digest": plan.input_digest},
        "config": config,
    }

