"""Export a training checkpoint (any ZeRO stage) as `model.safetensors` + `config.json`.

    python -m pipeline.export --run runs/<name> [--step N] --out DIR
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

from model import ModelConfig, save_exported

from .training import checkpointing


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


def export(run_dir: Path, out: Path, step: int | None = None) -> Path:
    ckpt_dir = run_dir / "checkpoints"
    tag = checkpointing.tag_for(step) if step is not None else checkpointing.find_resume_tag(ckpt_dir)
    if tag is None or not (ckpt_dir / tag / checkpointing.COMPLETE).is_file():
        raise FileNotFoundError(f"no complete checkpoint {tag or ''} under {ckpt_dir}")
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    model_cfg = ModelConfig(**OmegaConf.to_container(run_cfg.model))
    weights = consolidated_state_dict(ckpt_dir, tag, int(run_cfg.train.zero_stage))
    save_exported(weights, model_cfg, out)
    copy_tokenizer(ckpt_dir / tag, data_dir_of(run_cfg), out)
    return out


def copy_tokenizer(tag_dir: Path, data_dir: str | None, out: Path) -> None:
    """The export carries the tokenizer file its weights were trained with (tokenizer.json, or the
    RWKV World vocabulary; its sha256 is the export's tokenizer digest, which train.init_from and
    generate use), when the data dir still has it."""
    from data_prep.errors import UserError
    from data_prep.text_codec import FILES, load_codec

    from .training.run_guard import recorded_tokenizer

    for name in FILES.values():
        (out / name).unlink(missing_ok=True)
    try:
        codec = load_codec(data_dir) if data_dir else None
    except (UserError, OSError) as err:
        warnings.warn(f"{err}: the export has no tokenizer file", stacklevel=2)
        return
    recorded = recorded_tokenizer(tag_dir)
    if codec is None:
        warnings.warn("the run names no data dir: the export has no tokenizer file", stacklevel=2)
    elif recorded is not None and codec.sha256 != recorded:
        warnings.warn(f"the tokenizer of {data_dir} is not the one {tag_dir} was trained with (sha256 "
                      f"{recorded[:16]}...): the export has no tokenizer file", stacklevel=2)
    else:
        (out / codec.file).write_bytes(codec.file_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run directory (runs/<name>)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        out = export(args.run, args.out, args.step)
    except (FileNotFoundError, ValueError) as err:
        print(f"pipeline.export: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.run} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
