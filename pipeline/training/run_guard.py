"""Refusals that protect what a run already holds, checked before any process group or engine.

A run name that already holds checkpoints or metrics is resumed, and resuming is only meaningful
with the config that produced them: a different model, data dir, batch or seed would fail every
checkpoint's load (and then start over, truncating metrics.jsonl and the MLflow history) or
continue silently on other terms. The same goes for the tokenizer: weights trained on one
vocabulary mean nothing under another of the same size.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import OmegaConf

from .. import runs
from ..errors import PipelineError
from .init_from import source_kind

# keys that decide what a checkpoint holds or which data it continues with; the rest (max_steps,
# lr, logging, saving, tracking, export, ...) may change between a run's invocations
IDENTITY_PREFIXES = ("model.", "freeze.")
IDENTITY_KEYS = ("data.path", "data.mix", "data.shuffle_shards", "train.seed", "train.shuffle",
                 "train.micro_batch", "train.global_batch", "train.grad_accum", "train.zero_stage",
                 "train.precision")


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def identity(cfg_tree: dict) -> dict:
    flat = _flatten(cfg_tree)
    # with global_batch set, grad_accum is derived from the world size, which has its own check
    skip = "train.grad_accum" if flat.get("train.global_batch") else None
    return {k: v for k, v in flat.items()
            if (k.startswith(IDENTITY_PREFIXES) or k in IDENTITY_KEYS) and k != skip}


def config_differences(saved: dict, now: dict) -> list[str]:
    """`key: saved -> now` for every identity key that differs (keys one side lacks are skipped:
    they come from another version of the schema)."""
    a, b = identity(saved), identity(now)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]


def _has_history(run_dir: Path) -> bool:
    metrics = run_dir / runs.METRICS
    return bool(runs.complete_tags(runs.checkpoints_of(run_dir))) or (
        metrics.is_file() and metrics.stat().st_size > 0)


def check_resume_path(resume: str) -> None:
    """train.resume=<path> must name a complete checkpoint whose files are whole."""
    if resume in ("auto", "never"):
        return
    path = Path(resume)
    if not runs.is_complete(path):
        raise PipelineError(f"train.resume={resume}: not a complete checkpoint dir (expected "
                            f"runs/<name>/{runs.CHECKPOINTS}/stepNNNNNNNN with a {runs.COMPLETE} "
                            "marker)")
    problem = runs.verify(path)
    if problem:
        raise PipelineError(f"train.resume={resume}: the checkpoint is torn ({problem})")


def check_same_run(cfg, run_dir: Path) -> None:
    """Refuse to resume `run_dir` with a config that differs in what its checkpoints hold."""
    if cfg.train.resume == "never":
        return
    if cfg.train.resume != "auto":  # a checkpoint dir: compare with the run it belongs to
        check_resume_path(cfg.train.resume)
        run_dir = Path(cfg.train.resume).parent.parent
    saved_file = run_dir / runs.RUN_CONFIG
    if not saved_file.is_file() or not _has_history(run_dir):
        return
    saved = OmegaConf.to_container(OmegaConf.load(saved_file))
    diffs = config_differences(saved, OmegaConf.to_container(OmegaConf.structured(cfg)))
    if diffs:
        raise PipelineError(
            f"{run_dir} holds a run whose config differs ({'; '.join(diffs)}), so it cannot be resumed "
            f"with this one; nothing was changed. To train this config, give it a new name: "
            f"train.run_name=<new name> (with train.init_from={run_dir} to start from its weights "
            f"where names and shapes match), or re-run with the old values to resume. "
            f"train.resume=never starts this name over, replacing its checkpoints and metrics")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_tokenizer(path: Path) -> str | None:
    """The tokenizer digest of a train.init_from source, when it records one: a run's newest
    complete checkpoint, a checkpoint, or an export with its tokenizer file."""
    kind = source_kind(path)
    if kind == "checkpoint":
        return runs.recorded_tokenizer(path)
    if kind == "run":
        tag = runs.find_resume_tag(runs.checkpoints_of(path))
        return runs.recorded_tokenizer(runs.checkpoints_of(path) / tag) if tag else None
    if kind == "export":
        from data_prep.text_codec import FILES

        for name in FILES.values():
            if (path / name).is_file():
                return file_sha256(path / name)
    return None


def check_tokenizer(cfg, run_dir: Path, data_sha: str) -> None:
    """Refuse to resume, or to start from weights, trained with another tokenizer than the data
    dir's, unless train.allow_other_tokenizer=true says the vocabulary is reused on purpose."""
    if cfg.train.allow_other_tokenizer:
        return
    sources = []
    if cfg.train.resume == "auto":
        ckpts = runs.checkpoints_of(run_dir)
        sources += [ckpts / tag for tag in runs.candidates(ckpts)[:1]]
    elif cfg.train.resume != "never":
        sources.append(Path(cfg.train.resume))
    found = [(str(p), runs.recorded_tokenizer(p)) for p in sources]
    if cfg.train.init_from:
        found.append((f"train.init_from={cfg.train.init_from}", source_tokenizer(Path(cfg.train.init_from))))
    for where, digest in found:
        if digest is not None and digest != data_sha:
            raise PipelineError(
                f"{where} was trained with the tokenizer sha256 {digest[:16]}..., but the data dir "
                f"{cfg.data.path} has {data_sha[:16]}...: token ids would mean other text. Use the data "
                "built with that tokenizer (data_prep data.tokenizer=<its tokenizer.json> or rwkv-world), "
                "or set train.allow_other_tokenizer=true to reuse the weights with this vocabulary on "
                "purpose")
