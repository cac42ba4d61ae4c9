"""The run store: what a run dir holds and how it is named, read without the training stack.

    runs/<name>/
        config.yaml                 the resolved config the run trained with
        metrics.jsonl               one JSON object per optimizer step
        export/                     model.safetensors + config.json (train.export)
        checkpoints/
            latest                  the tag of the newest complete checkpoint
            step00000100/           DeepSpeed files + rank<R>.pt (loader position, RNG)
            step00000100/COMPLETE   the marker: the checkpoint is whole, and what it holds

The COMPLETE marker is self-describing: step, file sizes, model config, ZeRO stage, world size
and tokenizer digest, so a reader needs nothing else (older markers lack the last four; their
readers fall back to the run's config.yaml and the rank files). The lowest floor of `pipeline/`:
training, export and inference all read runs through it, and it imports none of them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from model import ModelConfig

RUN_CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EXPORT = "export"
CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
LATEST = "latest"
RANK_STATE = "rank{}.pt"


def run_dir_of(out_dir, run_name: str) -> Path:
    return Path(out_dir) / run_name


def checkpoints_of(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def rank_state_file(tag_dir: Path, rank: int) -> Path:
    return Path(tag_dir) / RANK_STATE.format(rank)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that a kill leaves either the old file or the new one, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


@dataclass(frozen=True)
class Marker:
    """A checkpoint's COMPLETE marker. `extra` keeps the fields other modules add (a PEFT run's
    base identity), so they survive a read and write."""
    step: int
    files: dict[str, int]
    model: dict | None = None
    zero_stage: int | None = None
    world_size: int | None = None
    tokenizer_sha256: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        known = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return json.dumps({**known, **self.extra})

    @classmethod
    def from_dict(cls, record: dict) -> "Marker":
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in record.items() if k in names}
        return cls(**known, extra={k: v for k, v in record.items() if k not in names})

    def model_config(self) -> ModelConfig | None:
        return None if self.model is None else ModelConfig(**self.model)


def write_marker(tag_dir: Path, marker: Marker) -> None:
    write_atomic(Path(tag_dir) / COMPLETE, marker.to_json())


def read_marker(tag_dir: Path) -> Marker | None:
    """The marker of a checkpoint; None when it is missing or unreadable."""
    try:
        record = json.loads((Path(tag_dir) / COMPLETE).read_text())
        return Marker.from_dict(record) if isinstance(record, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def is_complete(tag_dir: Path) -> bool:
    return (Path(tag_dir) / COMPLETE).is_file()


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Complete checkpoints, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.name for p in ckpt_dir.iterdir() if is_complete(p))


def set_latest(ckpt_dir: Path, tag: str) -> None:
    write_atomic(ckpt_dir / LATEST, tag + "\n")


def candidates(ckpt_dir: Path) -> list[str]:
    """Complete tags to try, best first: the one `latest` names, then the rest newest first."""
    tags = complete_tags(ckpt_dir)[::-1]
    latest = ckpt_dir / LATEST
    if latest.is_file() and latest.read_text().strip() in tags:
        tags.remove(pointed := latest.read_text().strip())
        tags.insert(0, pointed)
    return tags


def verify(tag_dir: Path) -> str | None:
    """None when the checkpoint is whole (every file the marker lists, at its size), else what is
    wrong with it."""
    try:
        recorded = json.loads((tag_dir / COMPLETE).read_text())["files"]
        items = recorded.items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"unreadable {COMPLETE} marker ({err})"
    for name, size in items:
        path = tag_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def find_resume_tag(ckpt_dir: Path) -> str | None:
    """The newest complete checkpoint whose files are whole (no loading)."""
    return next((tag for tag in candidates(ckpt_dir) if verify(ckpt_dir / tag) is None), None)


def resolve_tag(run_dir: Path, step: int | None) -> tuple[str, int]:
    """(tag, step) of a run's checkpoint for `step`, or of its newest whole one."""
    ckpt_dir = checkpoints_of(run_dir)
    tag = tag_for(step) if step is not None else find_resume_tag(ckpt_dir)
    if tag is None:
        raise FileNotFoundError(f"no complete checkpoint under {ckpt_dir}")
    marker = read_marker(ckpt_dir / tag)
    if marker is None:
        known = ", ".join(complete_tags(ckpt_dir)) or "none"
        raise FileNotFoundError(f"{ckpt_dir / tag} is not a complete checkpoint (complete: {known})")
    return tag, int(marker.step)


def saved_world(tag_dir: Path) -> int:
    """How many ranks wrote a checkpoint: its marker says, or count their rank<R>.pt files."""
    marker = read_marker(tag_dir)
    if marker is not None and marker.world_size:
        return int(marker.world_size)
    return len(list(Path(tag_dir).glob(RANK_STATE.format("*"))))


def recorded_tokenizer(tag_dir: Path) -> str | None:
    """The tokenizer digest a checkpoint's marker recorded (None: an older checkpoint)."""
    marker = read_marker(tag_dir)
    return None if marker is None else marker.tokenizer_sha256


def read_run_config(run_dir: Path) -> DictConfig:
    """A run's resolved config.yaml; a clear error when `run_dir` is not a run."""
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist")
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a training run dir")
    return OmegaConf.load(path)


def model_config_of(run_cfg) -> ModelConfig:
    """The ModelConfig a run's resolved config.yaml records."""
    return ModelConfig(**OmegaConf.to_container(run_cfg.model))


def checkpoint_model_config(tag_dir: Path, run_cfg) -> ModelConfig:
    """The model a checkpoint holds: its marker's, else (an older one) its run config's."""
    marker = read_marker(tag_dir)
    found = marker.model_config() if marker is not None else None
    return found if found is not None else model_config_of(run_cfg)


def checkpoint_zero_stage(tag_dir: Path, run_cfg) -> int:
    """The ZeRO stage a checkpoint was written with: its marker's, else its run config's."""
    marker = read_marker(tag_dir)
    if marker is not None and marker.zero_stage is not None:
        return int(marker.zero_stage)
    return int(run_cfg.train.zero_stage)


@dataclass(frozen=True)
class RunCheckpoint:
    """One complete checkpoint of a run, with the run's config: what export and inference read."""
    run_dir: Path
    run_cfg: DictConfig
    tag: str
    step: int

    @property
    def ckpt_dir(self) -> Path:
        return checkpoints_of(self.run_dir)

    @property
    def tag_dir(self) -> Path:
        return self.ckpt_dir / self.tag

    def model_config(self) -> ModelConfig:
        return checkpoint_model_config(self.tag_dir, self.run_cfg)

    def tokenizer_sha256(self) -> str | None:
        return recorded_tokenizer(self.tag_dir)

    def data_dir(self) -> str | None:
        return data_dir_of(self.run_cfg)


def open_checkpoint(run_dir: Path, step: int | None = None) -> RunCheckpoint:
    """A run's checkpoint for `step`, or its newest whole one; a clear error naming the path when
    the run or the checkpoint is not there."""
    run_cfg = read_run_config(run_dir)
    tag, found = resolve_tag(run_dir, step)
    return RunCheckpoint(Path(run_dir), run_cfg, tag, found)


def consolidated_state_dict(ckpt_dir: Path, tag: str, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 weights of a checkpoint. The model file holds every parameter as the module had
    it (stages 0-2); the ZeRO shards hold the fp32 masters of the trained ones (stages 1-3, and
    stage 3's frozen ones too), which win. Frozen parameters under ZeRO-1 are only in the former."""
    model_file = ckpt_dir / tag / "mp_rank_00_model_states.pt"  # stage 3 names its files per rank
    full = {}
    if model_file.is_file():
        states = torch.load(model_file, map_location="cpu", weights_only=True)
        full = {k: v.float() for k, v in states["module"].items() if v.numel()}
    if zero_stage > 0:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        full.update(get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag))
    return full


def data_dir_of(run_cfg) -> str | None:
    """The data dir a run's config names: data.path, or the first source of a data.mix (all
    sources of a mixture share one tokenizer)."""
    data = run_cfg.data
    path = data.get("path")
    if path:
        return str(path)
    mix = data.get("mix") or []
    return str(mix[0]["path"]) if mix else None
