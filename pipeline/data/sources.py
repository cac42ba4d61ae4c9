"""The data dirs a run trains on: `data.path`, or the weighted sources of `data.mix`.

Every source must be built with the same tokenizer (token ids would otherwise mean different text
in one batch); the first source also provides the validation split and the vocabulary.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

from .data_loader import DataDir
from . import remote
from .global_batches import GlobalBatches
from .mixture import BLOCK, quotas


@dataclass
class Source:
    name: str  # short, unique within the run: metric and tag names
    data: DataDir
    weight: float


def _name(path) -> str:
    base = str(path).rstrip("/").rsplit("/", 1)[-1] or "source"
    return re.sub(r"[^\w.\-]", "_", base)


def _unique(names: list[str]) -> list[str]:
    return [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]


@dataclass
class TrainingData:
    sources: list[Source]

    @property
    def first(self) -> DataDir:
        return self.sources[0].data

    @property
    def path(self):
        return self.first.path

    @property
    def vocab_size(self) -> int:
        return self.first.vocab_size

    @property
    def tokenizer_sha256(self) -> str:
        return self.first.tokenizer_sha256

    def check_model(self, vocab_size: int, ctx_len: int, world: int) -> None:
        self.first.check_model(vocab_size, ctx_len, world)
        for source in self.sources:
            tokens = sum(s.tokens + s.samples for s in source.data.splits.get("train", []))
            if tokens < ctx_len + 1:
                raise UserError(f"model.ctx_len={ctx_len}: the train split of {source.data.path} "
                                f"holds {tokens} tokens, too few for one {ctx_len + 1}-token window")

    def stream(self, cfg, rank: int, world: int) -> GlobalBatches:
        """This rank's training micro-batches (cfg: the run config, fitted to the world size)."""
        t = cfg.train
        return GlobalBatches([s.data for s in self.sources], [s.weight for s in self.sources],
                             [s.name for s in self.sources], cfg.model.ctx_len, t.seed, t.shuffle,
                             cfg.data.shuffle_shards, t.micro_batch, t.grad_accum, rank, world,
                             cfg.data.read_ahead)

    def tags(self) -> dict[str, str]:
        """MLflow tags naming exactly which data the run saw."""
        first = self.sources[0]
        tags = {"data_manifest_sha256": first.data.manifest_sha256, "data_path": _shown(first.data.path)}
        if len(self.sources) > 1:
            for s in self.sources:
                tags[f"data_mix/{s.name}/manifest_sha256"] = s.data.manifest_sha256
                tags[f"data_mix/{s.name}/path"] = _shown(s.data.path)
                tags[f"data_mix/{s.name}/weight"] = str(s.weight)
        return tags


def _shown(path) -> str:
    return str(path) if remote.is_url(path) else str(Path(path).resolve())


def open_sources(data_cfg) -> TrainingData:
    """Open `data.path` or every `data.mix` source; refuse sources of different tokenizers."""
    entries = [(m.path, m.weight) for m in data_cfg.mix] or [(data_cfg.path, 1.0)]
    opened = [DataDir.open(path, data_cfg.verify_shards, data_cfg.retries) for path, _ in entries]
    for data in opened[1:]:
        if data.tokenizer_sha256 != opened[0].tokenizer_sha256:
            raise UserError(
                f"data.mix: {opened[0].path} and {data.path} were built with different tokenizers "
                f"(sha256 {opened[0].tokenizer_sha256[:16]}... vs {data.tokenizer_sha256[:16]}...); "
                "a mixture needs one vocabulary: rebuild one with data.tokenizer=<the other's tokenizer>")
    names = _unique([_name(path) for path, _ in entries])
    quota = quotas([w for _, w in entries])
    for i, q in enumerate(quota):
        if q == 0:
            raise UserError(f"data.mix[{i}].weight={entries[i][1]}: below 1/{BLOCK} of the total "
                            "weight, so this source would never be drawn")
    return TrainingData([Source(n, d, float(w)) for n, d, (_, w) in zip(names, opened, entries)])
