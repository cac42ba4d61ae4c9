"""The plan: which document goes to which split and shard, fixed before any tokenizing.

Documents are enumerated in source order (sorted files, then line order). A document's split comes
from a stable hash of its id relative to the input root; consecutive documents of a split fill a
shard up to `data.shard_bytes` of source text. So shard contents depend only on the input and the
config, never on scheduling, and a shard's digest says whether a shard on disk is still current.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .readers import DocRef, Skipped, scan_file
from .sources import Corpus

SPLITS = ("train", "val")
EXAMPLES_PER_REASON = 5


@dataclass
class ShardSpec:
    name: str  # e.g. train-000000.tar
    split: str
    docs: list[tuple[int, DocRef]]  # (document number in the corpus, where it lives)
    digest: str = ""

    @property
    def nbytes(self) -> int:
        return sum(ref.nbytes for _, ref in self.docs)


@dataclass
class Plan:
    corpus: Corpus
    shards: list[ShardSpec]
    documents: int
    nbytes: int
    repaired: int
    skipped: Counter = field(default_factory=Counter)
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    input_digest: str = ""

    def split_docs(self, split: str) -> list[DocRef]:
        return [ref for s in self.shards if s.split == split for _, ref in s.docs]


def unit_hash(seed: int, salt: str, relid: str) -> float:
    """A stable number in [0, 1) for a document id."""
    h = hashlib.blake2b(f"{seed}\0{salt}\0{relid}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big") / 2**64


def scan_corpus(corpus: Corpus, field_name: str, policy: str, dedup: bool,
                on_skip: Callable[[Skipped], None]) -> tuple[list[DocRef], Counter, dict]:
    """All usable documents in order; skipped ones are counted by reason and reported."""
    docs: list[DocRef] = []
    counts: Counter = Counter()
    examples: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for src in corpus.files:
        for item in scan_file(src, field_name, policy):
            if isinstance(item, DocRef) and dedup:
                first = seen.setdefault(item.digest, item.source)
                if first != item.source:
                    item = Skipped("duplicate", item.source, f"same text as {first}")
            if isinstance(item, Skipped):
                counts[item.reason] += 1
                examples.setdefault(item.reason, [])
                if len(examples[item.reason]) < EXAMPLES_PER_REASON:
                    examples[item.reason].append(f"{item.source}: {item.detail}")
                on_skip(item)
            else:
                docs.append(item)
    return docs, counts, examples


def assign_splits(docs: list[DocRef], val_fraction: float, min_val_docs: int, seed: int) -> list[str]:
    """train/val per document: hash below val_fraction, topped up to min_val_docs by lowest hash;
    train always keeps at least one document."""
    if val_fraction <= 0 or not docs:
        return ["train"] * len(docs)
    keys = [unit_hash(seed, "split", ref.relid) for ref in docs]
    splits = ["val" if k < val_fraction else "train" for k in keys]
    order = sorted(range(len(docs)), key=lambda i: (keys[i], docs[i].relid))
    want = min(min_val_docs, len(docs) - 1)
    for i in order[:want]:
        splits[i] = "val"  # the lowest hashes are val already whenever any document is
    if "train" not in splits:
        splits[order[-1]] = "train"  # the trainer needs a train split
    return splits


def group_shards(numbered: Iterable[tuple[int, DocRef]], split: str, shard_bytes: int) -> list[ShardSpec]:
    """Consecutive documents into shards of about shard_bytes source bytes (one at least)."""
    shards: list[ShardSpec] = []
    current: list[tuple[int, DocRef]] = []
    size = 0
    for number, ref in numbered:
        if current and size + ref.nbytes > shard_bytes:
            shards.append(ShardSpec(f"{split}-{len(shards):06d}.tar", split, current))
            current, size = [], 0
        current.append((number, ref))
        size += ref.nbytes
    if current:
        shards.append(ShardSpec(f"{split}-{len(shards):06d}.tar", split, current))
    return shards


def shard_digest(shard: ShardSpec) -> str:
    body = [shard.name, shard.split, [[n, ref.source, ref.nbytes, ref.digest] for n, ref in shard.docs]]
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()


def make_plan(corpus: Corpus, cfg, on_skip: Callable[[Skipped], None]) -> Plan:
    docs, counts, examples = scan_corpus(corpus, cfg.text_field, cfg.on_invalid_utf8, cfg.dedup, on_skip)
    splits = assign_splits(docs, cfg.val_fraction, cfg.min_val_docs, cfg.seed)
    shards: list[ShardSpec] = []
    for split in SPLITS:
        numbered = ((n, ref) for n, (ref, s) in enumerate(zip(docs, splits)) if s == split)
        shards += group_shards(numbered, split, cfg.shard_bytes)
    inputs = hashlib.sha256()
    for shard in shards:
        shard.digest = shard_digest(shard)
        inputs.update(shard.digest.encode())
    inputs.update(json.dumps([sorted(counts.items()), examples]).encode())
    return Plan(corpus, shards, len(docs), sum(r.nbytes for r in docs), sum(r.repaired for r in docs),
                counts, examples, inputs.hexdigest())


def tokenizer_sample(plan: Plan, budget: int, seed: int) -> list[tuple[DocRef, int]]:
    """Train documents in a hash order until `budget` source bytes: (ref, bytes to use from it)."""
    docs = plan.split_docs("train") or plan.split_docs("val")
    chosen, used = [], 0
    for ref in sorted(docs, key=lambda r: (unit_hash(seed, "tokenizer", r.relid), r.relid)):
        if used >= budget:
            break
        take = min(ref.nbytes, budget - used)
        chosen.append((ref, take))
        used += take
    order = {ref.source: i for i, ref in enumerate(docs)}
    return sorted(chosen, key=lambda item: order[item[0].source])
