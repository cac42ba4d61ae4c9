"""What a run dir holds, read without the training stack: its model config, the data dir it
trained on, and a checkpoint's consolidated weights. The lowest floor of `pipeline/`: export,
inference and `train.init_from` all read runs through it, and it imports none of them."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from model import ModelConfig


def model_config_of(run_cfg) -> ModelConfig:
    """The ModelConfig a run's resolved config.yaml records."""
    return ModelConfig(**OmegaConf.to_container(run_cfg.model))


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
