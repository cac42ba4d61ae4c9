"""The data_prep config: an OmegaConf structured schema, merged from YAML and dotlist overrides."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

from common.config_loader import load_config as load_layers

from .errors import UserError

INVALID_UTF8_POLICIES = ("replace", "skip")
EXECUTORS = ("auto", "ray", "local")
# keys that change how a run goes, never what it writes: left out of the manifest and of the
# "same config as the existing output" check
RUN_ONLY_KEYS = ("output", "overwrite", "num_cpus", "executor", "auto_local_bytes", "tokenizer")


@dataclass
class DataConfig:
    input: Optional[str] = None  # file, dir, glob or binidx (path or fsspec URL); unset = the stdlib
    output: str = "data/default"  # a local dir or an fsspec URL (s3://bucket/dir)
    tokenizer: Optional[str] = None  # a tokenizer.json or rwkv-world; unset = train one on a sample
    vocab_size: int = 16384
    tokenizer_sample_bytes: int = 64_000_000  # source bytes the tokenizer is trained on
    text_field: str = "text"  # JSONL key / Parquet column holding the document
    val_fraction: float = 0.01  # share of documents (by a stable hash of their id) in val
    min_val_docs: int = 1  # at least this many val documents whenever val_fraction > 0
    shard_bytes: int = 4_000_000  # target source bytes per shard (known before tokenizing)
    unit_bytes: int = 64_000_000  # most source bytes one task reads (smaller for small inputs)
    on_invalid_utf8: str = "skip"  # skip | replace (with U+FFFD)
    dedup: bool = False  # drop exact duplicate documents (same text), keeping the first
    seed: int = 0  # salt of the train/val hash and the tokenizer sample order
    overwrite: bool = False  # rebuild an output dir that was made with another config
    num_cpus: Optional[int] = None  # local Ray CPUs; unset = all (ignored with RAY_ADDRESS)
    executor: str = "auto"  # auto | ray | local (one process, the plain reference path)
    # auto: local below this many input bytes, Ray above it or whenever RAY_ADDRESS names a
    # cluster (on 2 cores local won at every size measured, up to 130 MB: docs/BENCHMARKS.md)
    auto_local_bytes: int = 256_000_000


@dataclass
class DataPrepConfig:
    data: DataConfig = field(default_factory=DataConfig)


def check(cfg: DataConfig) -> None:
    """Value checks OmegaConf's types cannot express; each names the offending key."""

    def bad(key: str, why: str) -> UserError:
        return UserError(f"data.{key}={getattr(cfg, key)!r}: {why}")

    if cfg.on_invalid_utf8 not in INVALID_UTF8_POLICIES:
        raise bad("on_invalid_utf8", f"expected one of {', '.join(INVALID_UTF8_POLICIES)}")
    if cfg.executor not in EXECUTORS:
        raise bad("executor", f"expected one of {', '.join(EXECUTORS)}")
    if cfg.vocab_size < 258 or cfg.vocab_size > 2**31 - 1:
        raise bad("vocab_size", "must be at least 258 (256 bytes, the end-of-text token, one merge)")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise bad("val_fraction", "must be in [0, 1)")
    for key in ("shard_bytes", "unit_bytes", "tokenizer_sample_bytes", "auto_local_bytes"):
        if getattr(cfg, key) <= 0:
            raise bad(key, "must be positive")
    if cfg.min_val_docs < 0:
        raise bad("min_val_docs", "must be >= 0")
    if cfg.num_cpus is not None and cfg.num_cpus < 1:
        raise bad("num_cpus", "must be >= 1 (or unset for all)")
    if not cfg.output:
        raise bad("output", "must name a directory")
    if not cfg.text_field:
        raise bad("text_field", "must be a non-empty field name")


def load_config(config_file: str | None = None, overrides: list[str] | None = None) -> DataConfig:
    """Schema <- YAML <- overrides, checked before any work; errors are UserError naming the key."""
    files = [config_file] if config_file is not None else []
    cfg: DataPrepConfig = load_layers(DataPrepConfig, files, overrides or [],
                                      example="data.vocab_size=4096")
    check(cfg.data)
    return cfg.data


def recorded(cfg: DataConfig) -> dict:
    """The keys that decide what a run writes, in field order (manifest and output-dir check)."""
    return {f.name: getattr(cfg, f.name) for f in fields(DataConfig) if f.name not in RUN_ONLY_KEYS}
