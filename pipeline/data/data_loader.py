"""A data dir built by `data_prep` (WebDataset shards): its manifest, tokenizer and shards, checked.

Windows are cut from the shards elsewhere (`windows.py`, in the orders of `order.py`): training
and validation read through that one reader.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserError

from . import remote
from ..errors import PipelineError

EOT = "<|endoftext|>"


@dataclass(frozen=True)
class Shard:
    name: str
    path: Path | str  # a str for a URL
    samples: int
    tokens: int
    sha256: str | None = None
    file_bytes: int | None = None


class ShardError(PipelineError):
    """A shard that is missing, torn, altered or holds ids outside the tokenizer: one line that
    names the shard and how to rebuild it."""

    def __init__(self, path: Path | str, problem: str):
        rebuild = (f"rebuild it with python -m data_prep data.output={remote.parent(path)} (the same "
                   "input and config), which re-checks every shard's sha256 and rewrites bad ones")
        super().__init__(" ".join(f"shard {path}: {problem}; {rebuild}".split()))


def read_shard(path: Path | str, sha256: str | None = None, retries: int = 3) -> list[np.ndarray]:
    """All documents of one shard, in stored order; with `sha256`, the file must hash to it."""
    try:
        raw = remote.read_bytes(path, retries)
    except OSError as err:
        raise ShardError(path, f"cannot be read ({err})") from err
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ShardError(path, f"its sha256 differs from the manifest's ({sha256[:12]}...): the "
                               "file was altered or torn after it was built")
    docs = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".tokens.npy"):
                    docs.append(np.load(io.BytesIO(tar.extractfile(member).read())).astype(np.int64))
    except Exception as err:  # a torn tar or npy can fail in any of the parsers
        raise ShardError(path, f"is unreadable ({type(err).__name__}: {err})") from err
    return docs


@dataclass
class DataDir:
    path: Path | str  # a str for a URL
    manifest: dict
    vocab_size: int
    eot: int
    splits: dict[str, list[Shard]]
    tokenizer_sha256: str = ""
    verify_shards: bool = True  # hash each shard the first time this process reads it
    manifest_sha256: str = ""
    retries: int = 3  # reads of a URL
    _verified: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def open(cls, path: str | Path, verify_shards: bool = True, retries: int = 3) -> "DataDir":
        """Checks what is cheap at once: the manifest, the tokenizer, and that every listed shard
        exists with the size the manifest recorded (one listing for a URL). Contents are hashed
        on first read."""
        from data_prep.text_codec import load_codec

        path = path if remote.is_url(path) else Path(path)
        if not remote.is_dir(path):
            raise FileNotFoundError(f"data dir {path} does not exist: build it with `make data` "
                                    f"(python -m data_prep data.output={path})")
        sizes = remote.file_sizes(path)
        manifest_file = remote.join(path, "manifest.json")
        if "manifest.json" not in sizes:
            raise FileNotFoundError(f"{manifest_file} is missing: {path} is not a complete data dir "
                                    "(re-run python -m data_prep to finish it)")
        manifest_bytes = remote.read_bytes(manifest_file, retries)
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as err:
            raise UserError(f"{manifest_file} is not JSON ({err}): rebuild the data dir with "
                            "python -m data_prep") from None
        codec = load_codec(path)
        splits: dict[str, list[Shard]] = {"train": [], "val": []}
        for entry in manifest["shards"]:
            shard = Shard(entry["name"], remote.join(path, entry["name"]), int(entry["samples"]),
                          int(entry["tokens"]), entry.get("sha256"), entry.get("file_bytes"))
            if entry["name"] not in sizes:
                raise ShardError(shard.path, "is listed in the manifest but missing")
            size = sizes[entry["name"]]
            if shard.file_bytes is not None and size != shard.file_bytes:
                raise ShardError(shard.path, f"has {size} bytes, the manifest recorded "
                                             f"{shard.file_bytes} (torn or altered)")
            splits.setdefault(entry["name"].split("-", 1)[0], []).append(shard)
        return cls(path, manifest, codec.vocab_size, codec.eot_id, splits, codec.sha256, verify_shards,
                   manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(), retries=retries)

    def read(self, shard: Shard) -> list[np.ndarray]:
        """A shard's documents, hashed against the manifest the first time this process reads
        it, and checked for ids the tokenizer cannot have made (they would fail on the device
        far from their source)."""
        verify = self.verify_shards and shard.name not in self._verified
        docs = read_shard(shard.path, shard.sha256 if verify else None, self.retries)
        if len(docs) != shard.samples:
            raise ShardError(shard.path, f"holds {len(docs)} documents, the manifest recorded "
                                         f"{shard.samples}")
        for i, doc in enumerate(docs):
            if doc.size and (doc.min() < 0 or doc.max() >= self.vocab_size):
                bad = int(doc.max() if doc.max() >= self.vocab_size else doc.min())
                raise ShardError(shard.path, f"document {i} holds token id {bad}, outside the "
                                             f"tokenizer's {self.vocab_size} ids (built with another "
                                             "tokenizer?)")
        if verify:
            self._verified.add(shard.name)
        return docs

    def check_model(self, vocab_size: int, ctx_len: int, world: int) -> None:
        if vocab_size < self.vocab_size:
            raise UserError(f"model.vocab_size={vocab_size} is smaller than the tokenizer's "
                            f"{self.vocab_size} ({self.path}: {self.manifest.get('tokenizer', {}).get('kind', 'bpe')})")
        tokens = sum(s.tokens + s.samples for s in self.splits.get("train", []))  # + end-of-texts
        if tokens < (ctx_len + 1) * world:
            raise UserError(f"model.ctx_len={ctx_len}: the train split of {self.path} holds "
                            f"{tokens} tokens, too few to fill one {ctx_len + 1}-token window "
                            f"per rank ({world} ranks)")
