"""Build one shard: read its documents, tokenize them, write a WebDataset tar, record it as done.

This is the body of a Ray task (and of the single-process path). The tar bytes depend only on the
documents and the tokenizer: members carry fixed mtime, owner and mode. The tar is renamed into
place when complete, then a done-record with its sha256 is written; a later run trusts a shard
only if that record matches the plan and the file's checksum.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic, text_codec, tokenizer
from .readers import read_documents
from .sharding import ShardSpec

STATE_DIR = ".state"


@dataclass(frozen=True)
class ShardJob:
    """Everything a task needs besides the shard itself (small; shipped with every task)."""
    output: str
    tokenizer_sha: str
    text_field: str
    on_invalid_utf8: str


def sample_key(number: int) -> str:
    """WebDataset splits key from field at the first dot, so keys have none."""
    return f"doc{number:09d}"


def done_record_path(output: Path, name: str) -> Path:
    return output / STATE_DIR / f"{name}.done.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_record(output: Path, shard: ShardSpec, tokenizer_sha: str) -> dict | None:
    """The done-record of a shard already on disk, if it is this plan's shard and intact."""
    try:
        record = json.loads(done_record_path(output, shard.name).read_text())
    except (OSError, ValueError):
        return None
    path = output / shard.name
    if (record.get("plan") != shard.digest or record.get("tokenizer") != tokenizer_sha
            or not path.is_file() or path.stat().st_size != record.get("file_bytes")):
        return None
    return record if file_sha256(path) == record.get("sha256") else None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _npy(tokens: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, tokens, allow_pickle=False)
    return buf.getvalue()


def _batches(shard: ShardSpec, job: ShardJob, limit: int):
    """The shard's documents as lists of (number, ref, text) of about `limit` characters."""
    batch, size = [], 0
    texts = read_documents([ref for _, ref in shard.docs], job.text_field, job.on_invalid_utf8)
    for (number, ref), (_, text) in zip(shard.docs, texts):
        batch.append((number, ref, text))
        size += len(text)
        if size >= limit:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def write_shard(shard: ShardSpec, job: ShardJob, codec_spec: text_codec.CodecSpec) -> dict:
    """Tokenize and write the shard unless a verified copy exists; returns its done-record."""
    output = Path(job.output)
    record = verified_record(output, shard, job.tokenizer_sha)
    if record is not None:
        return {**record, "reused": True}
    codec = text_codec.from_spec(codec_spec)
    dtype = text_codec.token_dtype(codec)
    final = output / shard.name
    tmp = atomic.partial_name(final)
    samples = tokens = 0
    try:
        with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for batch in _batches(shard, job, tokenizer.BATCH_CHARS):
                ids = codec.encode_documents([text for _, _, text in batch], dtype)
                for (number, ref, _), doc_ids in zip(batch, ids):
                    key = sample_key(number)
                    meta = {"source": ref.source, "bytes": ref.nbytes, "tokens": int(doc_ids.size)}
                    _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                    _add(tar, f"{key}.tokens.npy", _npy(doc_ids))
                    samples += 1
                    tokens += int(doc_ids.size)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"name": shard.name, "split": shard.split, "sha256": file_sha256(final),
              "samples": samples, "tokens": tokens, "bytes": shard.nbytes,
              "file_bytes": final.stat().st_size, "plan": shard.digest, "tokenizer": job.tokenizer_sha}
    atomic.write_bytes(done_record_path(output, shard.name), json.dumps(record, indent=1).encode())
    return {**record, "reused": False}
