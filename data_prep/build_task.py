"""The second pass over one unit, in a task: read its documents again, tokenize them, write its
shards under staging keys, and record them as done.

A unit's shards depend only on its documents and the plan's decisions for it (val top-up,
dropped duplicates), never on who builds it, and shard_format writes tar members with fixed
metadata, so the bytes are the same on every run. A later run trusts a unit only if its
done-record matches the plan's digest for it and every shard it lists hashes to the recorded
sha256, either still under its staging key or already published under its final name.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from . import text_codec, tokenizer
from .dedup import dropped_in
from .readers import ReadOptions, read_piece, source_of
from .scan_task import SHOWN_PER_REASON, unit_hash
from .shard_format import SHARD_SUFFIX, ShardWriter, sample_key
from .storage import Store
from .units import Unit

STATE_DIR = ".state"
UNITS_DIR = f"{STATE_DIR}/units"
STAGED_DIR = f"{STATE_DIR}/staged"
BATCH_DOCS = 2048  # documents per encode call at most (bounds the memory of many short ones)


@dataclass(frozen=True)
class BuildSpec:
    """The plan for one unit: small, shipped with its task."""
    unit: Unit
    digest: str  # of everything that decides this unit's shards
    first_doc: int  # number of its first document in the corpus (sample keys)
    first_lines: tuple[int, ...]  # per piece: JSONL line number of its first line
    read: ReadOptions
    seed: int
    val_fraction: float
    to_val: frozenset  # documents moved to val by the top-up (data.min_val_docs)
    to_train: frozenset  # the document kept in train when everything hashed to val
    shard_bytes: int
    output: str
    published: tuple = ()  # (name, sha256, file_bytes) of its shards in an earlier manifest


def record_name(unit: int) -> str:
    return f"{UNITS_DIR}/u{unit:06d}.json"


def staged_name(unit: int, split: str, index: int) -> str:
    return f"{STAGED_DIR}/u{unit:06d}-{split}-{index:06d}{SHARD_SUFFIX}"


def _intact(store: Store, name: str, sha: str, size: int) -> bool:
    return store.size(name) == size and store.sha256(name) == sha


def verified(store: Store, spec: BuildSpec) -> dict | None:
    """The unit's done-record if its shards are intact, staged or published."""
    raw = store.read_bytes(record_name(spec.unit.index))
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not record or record.get("digest") != spec.digest:
        return None
    shards = record["shards"]
    if all(_intact(store, staged_name(spec.unit.index, s["split"], s["index"]), s["sha256"], s["file_bytes"])
           for s in shards):
        return {**record, "where": "staged"}
    if len(spec.published) == len(shards) and all(
            (sha, size) == (s["sha256"], s["file_bytes"]) and _intact(store, name, sha, size)
            for (name, sha, size), s in zip(spec.published, shards)):
        return {**record, "where": "published"}
    return None


class _HashingFile:
    """Passes writes through to a file while hashing and counting them."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.n += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.n


class _Shards:
    """The shards of one split of a unit, filled in document order up to shard_bytes each and
    streamed to storage as they fill (no shard is held in memory)."""

    def __init__(self, store: Store, unit: int, split: str, shard_bytes: int):
        self.store, self.unit, self.split, self.limit = store, unit, split, shard_bytes
        self.done: list[dict] = []
        self.ctx = None

    def _open(self) -> None:
        self.ctx = self.store.writer(staged_name(self.unit, self.split, len(self.done)))
        self.out = _HashingFile(self.ctx.__enter__())
        self.shard = ShardWriter(self.out)
        self.samples = self.tokens = self.nbytes = 0

    def add(self, key: str, source: str, nbytes: int, ids: np.ndarray) -> None:
        if self.ctx is not None and self.nbytes + nbytes > self.limit:
            self.close()
        if self.ctx is None:
            self._open()
        meta = {"source": source, "bytes": nbytes, "tokens": int(ids.size)}
        self.shard.add(key, meta, ids)
        self.samples += 1
        self.tokens += int(ids.size)
        self.nbytes += nbytes

    def close(self) -> None:
        if self.ctx is None:
            return
        self.shard.close()
        self.ctx.__exit__(None, None, None)
        self.ctx = None
        self.done.append({"split": self.split, "index": len(self.done), "sha256": self.out.sha.hexdigest(),
                          "samples": self.samples, "tokens": self.tokens, "bytes": self.nbytes,
                          "file_bytes": self.out.n})

    def abort(self) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self.ctx = None


def _documents(spec: BuildSpec, dropped: set[int], notes: dict):
    """(doc number in the unit, source, split, record) of the documents to keep, in order."""
    doc = 0
    for p, piece in enumerate(spec.unit.pieces):
        for rec in read_piece(piece, spec.read):
            if rec.skip is not None:
                continue
            source = source_of(piece, rec.line, spec.first_lines[p])
            notes["stripped_eot"] += rec.repaired and rec.text is None
            if doc in dropped:
                notes["duplicates"] += 1
                if len(notes["duplicate_examples"]) < SHOWN_PER_REASON:
                    notes["duplicate_examples"].append(source)
            else:
                val = unit_hash(spec.seed, "split", rec.relid) < spec.val_fraction or doc in spec.to_val
                yield doc, source, ("train" if doc in spec.to_train or not val else "val"), rec
            doc += 1


def build_unit(spec: BuildSpec, codec_spec: text_codec.CodecSpec, *dup_parts, progress=None) -> dict:
    """Tokenize and stage the unit's shards unless a verified copy exists; returns its done-record."""
    store = Store(spec.output)
    record = verified(store, spec)
    if record is not None:
        return {**record, "built": False}
    codec = text_codec.from_spec(codec_spec)
    dtype = text_codec.token_dtype(codec)
    notes = {"duplicates": 0, "duplicate_examples": [], "stripped_eot": 0}
    shards = {s: _Shards(store, spec.unit.index, s, spec.shard_bytes) for s in ("train", "val")}
    batch, size = [], 0

    def flush():
        texts = [rec.text for _, _, _, rec in batch if rec.text is not None]
        encoded = iter(codec.encode_documents(texts, dtype) if texts else [])
        tokens = 0
        for doc, source, split, rec in batch:
            ids = next(encoded) if rec.text is not None else rec.data.astype(dtype)
            nbytes = len(rec.data) if rec.text is not None else rec.data.nbytes
            shards[split].add(sample_key(spec.first_doc + doc), source, nbytes, ids)
            tokens += int(ids.size)
        if progress is not None:
            progress.add(docs=len(batch), tokens=tokens)

    try:
        for item in _documents(spec, dropped_in(spec.unit.index, dup_parts), notes):
            batch.append(item)
            size += len(item[3].text) if item[3].text is not None else item[3].data.size
            if size >= tokenizer.BATCH_CHARS or len(batch) >= BATCH_DOCS:
                flush()
                batch, size = [], 0
        if batch:
            flush()
        for s in shards.values():
            s.close()
    except BaseException:
        for s in shards.values():
            s.abort()
        raise
    record = {"unit": spec.unit.index, "digest": spec.digest, **notes,
              "shards": shards["train"].done + shards["val"].done}
    store.write_bytes(record_name(spec.unit.index), json.dumps(record, indent=1).encode())
    if progress is not None:
        progress.flush()
    return {**record, "where": "staged", "built": True}
