"""A run's checkpoint (any ZeRO stage) written as an export: `model.safetensors` + `config.json`,
and the tokenizer file its weights were trained with. `pipeline.export` and a run's own final
export (train.export) both write through here.

A Bone/Bat fine-tuning run (peft.method) is merged into plain weights of the base architecture,
unless `unmerged` keeps its blocks apart (load_exported wraps the Linears they belong to).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from model import save_exported
from model.bone import merge_state_dict

from .. import runs
from ..training.init_from import checkpoint_weights


def export(run_dir: Path, out: Path, step: int | None = None, unmerged: bool = False) -> Path:
    ckpt = runs.open_checkpoint(run_dir, step)
    weights = checkpoint_weights(ckpt.ckpt_dir, ckpt.tag)  # a slim PEFT run's base rebuilt
    if not unmerged:
        weights = merge_state_dict(weights)
    save_exported(weights, ckpt.model_config(), out)
    copy_tokenizer(ckpt, out)
    return out


def copy_tokenizer(ckpt: runs.RunCheckpoint, out: Path) -> None:
    """The export carries the tokenizer file its weights were trained with (tokenizer.json, or the
    RWKV World vocabulary; its sha256 is the export's tokenizer digest, which train.init_from and
    generate use), when the data dir still has it."""
    from data_prep.errors import UserError
    from data_prep.text_codec import FILES, load_codec

    for name in FILES.values():
        (out / name).unlink(missing_ok=True)
    data_dir = ckpt.data_dir()
    try:
        codec = load_codec(data_dir) if data_dir else None
    except (UserError, OSError) as err:
        warnings.warn(f"{err}: the export has no tokenizer file", stacklevel=2)
        return
    recorded = ckpt.tokenizer_sha256()
    if codec is None:
        warnings.warn("the run names no data dir: the export has no tokenizer file", stacklevel=2)
    elif recorded is not None and codec.sha256 != recorded:
        warnings.warn(f"the tokenizer of {data_dir} is not the one {ckpt.tag_dir} was trained with "
                      f"(sha256 {recorded[:16]}...): the export has no tokenizer file", stacklevel=2)
    else:
        (out / codec.file).write_bytes(codec.file_bytes())
