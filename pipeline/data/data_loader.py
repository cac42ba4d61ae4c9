"""Stream packed training windows from a data dir built by `data_prep` (WebDataset shards).

Shards are split across ranks deterministically: each epoch permutes the shard list with the seed
and rank r takes every world-th shard. With fewer shards than ranks, every rank reads all shards
and takes every world-th window instead. Either way ranks see disjoint data and an epoch covers
every token once. The stream's position is a few integers plus < ctx_len+1 carried tokens.
Training itself reads through `pipeline.data` (a global order that does not depend on the number
of ranks); this stream serves validation and evaluation.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

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


class TokenStream:
    """Endless stream of [ctx_len+1] windows for one rank; epochs repeat with a new shard order."""

    def __init__(self, shards: list[Shard], rank: int, world: int, ctx_len: int, eot: int,
                 seed: int, shuffle: bool, read: Callable[[Shard], list[np.ndarray]] | None = None):
        if not shards:
            raise ValueError("no shards to stream from")
        self.shards, self.rank, self.world = shards, rank, world
        self.ctx_len, self.eot, self.seed, self.shuffle = ctx_len, eot, seed, shuffle
        self.read = read or (lambda shard: read_shard(shard.path))
        self.by_window = len(shards) < world
        self._cache: tuple[tuple[int, int], list[np.ndarray]] | None = None
        self.reset()

    def reset(self) -> None:
        self.epoch = self.shard_pos = self.sample_pos = self.doc_offset = self.window_index = 0
        self.carry = np.zeros(0, dtype=np.int64)

    def _epoch_shards(self) -> list[int]:
        """Indices of this rank's shards for the current epoch, in reading order."""
        order = np.arange(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shards))
        return [int(i) for i in (order if self.by_window else order[self.rank::self.world])]

    def _docs(self, index: int) -> list[np.ndarray]:
        """A shard's documents, in a seeded per-epoch order when shuffling."""
        key = (self.epoch, index)
        if self._cache is None or self._cache[0] != key:
            docs = self.read(self.shards[index])
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch, index]).permutation(len(docs))
                docs = [docs[i] for i in order]
            self._cache = (key, docs)
        return self._cache[1]

    def _fill(self, need: int) -> None:
        while len(self.carry) < need:
            shards = self._epoch_shards()
            if self.shard_pos >= len(shards):
                self.epoch, self.shard_pos, self.sample_pos = self.epoch + 1, 0, 0
                continue
            docs = self._docs(shards[self.shard_pos])
            if self.sample_pos >= len(docs):
                self.shard_pos, self.sample_pos = self.shard_pos + 1, 0
                continue
            doc = docs[self.sample_pos]
            size = len(doc) + 1  # the document and its end-of-text token
            take = min(need - len(self.carry), size - self.doc_offset)
            piece = doc[self.doc_offset:self.doc_offset + take]
            if self.doc_offset + take == size:
                piece = np.concatenate([piece, [self.eot]])
                self.sample_pos, self.doc_offset = self.sample_pos + 1, 0
            else:
                self.doc_offset += take
            self.carry = np.concatenate([self.carry, piece])

    def next_window(self) -> np.ndarray:
        while True:
            self._fill(self.ctx_len + 1)
            window = self.carry[: self.ctx_len + 1]
            self.carry = self.carry[self.ctx_len:]  # overlap one token: each token is a target once
            index, self.window_index = self.window_index, self.window_index + 1
            if not self.by_window or index % self.world == self.rank:
                return window

    def next_batch(self, batch: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.next_window() for _ in range(batch)]))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "sample_pos": self.sample_pos,
                "doc_offset": self.doc_offset, "window_index": self.window_index,
                "carry": self.carry.tolist(), "shards": [s.name for s in self.shards],
                "rank": self.rank, "world": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state["shards"] != [s.name for s in self.shards] or state["world"] != self.world:
            raise ValueError("the saved loader position belongs to other data or another world size "
                             f"({state['world']} ranks); resume with the same data dir and ranks")
        for key in ("epoch", "shard_pos", "sample_pos", "doc_offset", "window_index"):
            setattr(self, key, int(state[key]))
        self.carry = np.asarray(state["carry"], dtype=np.int64)


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
        from data_prep.errors import UserError
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
        manifest = json.loads(manifest_bytes)
        try:
            codec = load_codec(path)
        except UserError as err:
            raise ValueError(str(err)) from None
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
            raise ValueError(f"model.vocab_size={vocab_size} is smaller than the tokenizer's "
                             f"{self.vocab_size} ({self.path}: {self.manifest.get('tokenizer', {}).get('kind', 'bpe')})")
        for split in ("train", "val"):
            shards = self.splits.get(split, [])
            tokens = sum(s.tokens + s.samples for s in shards)  # + one end-of-text per document
            if tokens < (ctx_len + 1) * world:
                raise ValueError(f"model.ctx_len={ctx_len}: the {split} split of {self.path} holds "
                                 f"{tokens} tokens, too few to fill one {ctx_len + 1}-token window "
                                 f"per rank ({world} ranks)")

    def stream(self, split: str, rank: int, world: int, ctx_len: int, seed: int,
               shuffle: bool) -> TokenStream:
        shards = self.splits.get(split, [])
        if not shards:
            raise ValueError(f"data dir {self.path} has no {split} shards")
        return TokenStream(shards, rank, world, ctx_len, self.eot, seed, shuffle, self.read)
