"""The data dir's format, writer and reader side by side: names, shard members, the manifest.

A data dir holds `train-NNNNNN.tar` / `val-NNNNNN.tar` shards (WebDataset's layout: one sample per
document, members `<key>.tokens.npy` and `<key>.json`), its tokenizer file and `manifest.json`,
written last. `python -m data_prep` writes it and the trainer reads it, both through this module,
so a name or suffix cannot drift between the two. Tar members carry fixed mtime, owner and mode,
so a shard's bytes depend only on its documents.
"""
from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np

from .errors import UserError

MANIFEST = "manifest.json"
FORMAT = "goldfinch-data/1"
SPLITS = ("train", "val")
SHARD_SUFFIX = ".tar"
TOKENS_MEMBER = ".tokens.npy"
META_MEMBER = ".json"
SHARD_NAME = re.compile(r"^(train|val)-\d{6}\.tar$")
# what the manifest records per shard; the trainer reads name, samples, tokens, sha256, file_bytes
SHARD_KEYS = ("name", "split", "sha256", "samples", "tokens", "bytes", "file_bytes", "unit")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}{SHARD_SUFFIX}"


def split_of(name: str) -> str:
    """A shard's split is its name's prefix before the first '-'."""
    return name.split("-", 1)[0]


def sample_key(number: int) -> str:
    """WebDataset splits key from field at the first dot, so keys have none."""
    return f"doc{number:09d}"


def _npy(tokens: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, tokens, allow_pickle=False)
    return buf.getvalue()


class ShardWriter:
    """Documents streamed into one shard, in order, onto a file-like object opened for writing."""

    def __init__(self, fileobj):
        self.tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))

    def add(self, key: str, meta: dict, tokens: np.ndarray) -> None:
        self._add(key + META_MEMBER, json.dumps(meta, sort_keys=True).encode())
        self._add(key + TOKENS_MEMBER, _npy(tokens))

    def close(self) -> None:
        self.tar.close()


def read_documents(raw: bytes) -> list[np.ndarray]:
    """Every document's token ids of one shard's bytes, in stored order (parse errors propagate:
    the caller names the shard)."""
    docs = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(TOKENS_MEMBER):
                docs.append(np.load(io.BytesIO(tar.extractfile(member).read())).astype(np.int64))
    return docs


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def parse_manifest(raw: bytes, where: str) -> dict:
    """The manifest in `raw`; one line naming `where` if it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError as err:
        raise UserError(f"{where} is not JSON ({err}): rebuild the data dir with "
                        "python -m data_prep") from None


def write_manifest(store, manifest: dict) -> None:
    """Written last and all at once: a dir with a manifest is complete."""
    store.write_bytes(MANIFEST, manifest_bytes(manifest))


def read_manifest(store) -> dict | None:
    """The manifest of a storage.Store's dir, or None if it has none."""
    raw = store.read_bytes(MANIFEST)
    return None if raw is None else parse_manifest(raw, store.url(MANIFEST))
