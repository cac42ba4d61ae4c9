"""`train.init_from`: start a new run from another run's weights wherever names and shapes match.

The source may be a run dir (its newest complete checkpoint), one checkpoint dir, an export dir or a
`.safetensors` file. Typical use: a trained Finch into GoldFinch's lower blocks, embeddings and head,
with the GOLD blocks and the key compression initialised fresh.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import checkpointing
from .errors import PipelineError


def _from_checkpoint(ckpt_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    from .export import consolidated_state_dict

    run_cfg = OmegaConf.load(ckpt_dir.parent / "config.yaml")
    return consolidated_state_dict(ckpt_dir, tag, int(run_cfg.train.zero_stage))


def source_kind(path: Path) -> str:
    """What `path` is, or a PipelineError saying what was expected."""
    if path.is_file() and path.suffix == ".safetensors":
        return "safetensors"
    if (path / "model.safetensors").is_file():
        return "export"
    if (path / checkpointing.COMPLETE).is_file():
        return "checkpoint"
    if (path / "checkpoints").is_dir():
        return "run"
    raise PipelineError(f"train.init_from={path}: not a run dir, a complete checkpoint dir, an "
                        "export dir or a .safetensors file")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    kind = source_kind(path)
    if kind == "safetensors":
        return load_file(str(path))
    if kind == "export":
        return load_file(str(path / "model.safetensors"))
    if kind == "checkpoint":
        return _from_checkpoint(path.parent, path.name)
    tag = checkpointing.find_resume_tag(path / "checkpoints")
    if tag is None:
        raise PipelineError(f"train.init_from={path}: the run has no complete checkpoint")
    return _from_checkpoint(path / "checkpoints", tag)


def load_matching(model: torch.nn.Module, source: str) -> dict[str, list[str]]:
    """Copy every parameter whose name and shape match; returns the loaded, new and ignored names.
    A name that matches with another shape is an error (a different width or arch), as is a
    source that matches nothing."""
    weights = read_weights(Path(source))
    own = dict(model.named_parameters())
    mismatched = [f"{n} {tuple(weights[n].shape)} -> {tuple(p.shape)}"
                  for n, p in own.items() if n in weights and weights[n].shape != p.shape]
    if mismatched:
        raise PipelineError(f"train.init_from={source}: shape mismatch for {len(mismatched)} "
                            f"parameter(s), e.g. {'; '.join(mismatched[:3])} (a different width, "
                            "vocab or arch?)")
    loaded = [n for n in own if n in weights]
    if not loaded:
        raise PipelineError(f"train.init_from={source}: none of its {len(weights)} tensors matches a "
                            f"parameter of this {model.cfg.arch} model by name")
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(weights[name])
    return {"loaded": loaded, "new": [n for n in own if n not in weights],
            "ignored": sorted(n for n in weights if n not in own)}
