"""Export a training checkpoint (any ZeRO stage) as `model.safetensors` + `config.json`.

    python -m pipeline.export --run runs/<name> [--step N] --out DIR [--unmerged]

A Bone/Bat fine-tuning run (peft.method) is merged into plain weights of the base architecture;
`--unmerged` keeps its blocks apart (load_exported wraps the Linears they belong to).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from common.cli import command
from model import save_exported
from model.bone import merge_state_dict

from .runs import data_dir_of, model_config_of
from .training import checkpointing
from .training.init_from import checkpoint_weights


def export(run_dir: Path, out: Path, step: int | None = None, unmerged: bool = False) -> Path:
    ckpt_dir = run_dir / "checkpoints"
    tag = checkpointing.tag_for(step) if step is not None else checkpointing.find_resume_tag(ckpt_dir)
    if tag is None or not (ckpt_dir / tag / checkpointing.COMPLETE).is_file():
        raise FileNotFoundError(f"no complete checkpoint {tag or ''} under {ckpt_dir}")
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    model_cfg = model_config_of(run_cfg)
    weights = checkpoint_weights(ckpt_dir, tag)  # a slim PEFT run's base rebuilt
    if not unmerged:
        weights = merge_state_dict(weights)
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


@command("pipeline.export")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run directory (runs/<name>)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--unmerged", action="store_true",
                        help="keep Bone/Bat blocks apart from the weights they update")
    args = parser.parse_args(argv)
    out = export(args.run, args.out, args.step, args.unmerged)
    print(f"exported {args.run} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
