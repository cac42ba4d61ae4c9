"""`train.init_from`: start a new run from another run's weights wherever names and shapes match.

The source may be a run dir (its newest complete checkpoint), one checkpoint dir, an export dir, a
`.safetensors` file, or a checkpoint of the paper's reference implementation (`.pth`, converted on
the fly). Typical use: a trained Finch into the lower blocks of the paper's upgrade architecture
(GoldFinch with `model.lower=finch`), with the GOLD blocks and the key compression initialised fresh.
A block whose recurrent mixer differs between source and target (RWKV-6 vs Finch-C2) is refused:
same names, other computation. A block of another kind (a Finch block where this model has a GOLD
block, or the reverse) lends it nothing, not even its channel mix or norms, unless
`train.init_from_cross_kind` is set: the paper's upgrade starts its GOLD blocks fresh.
"""
from __future__ import annotations

from pathlib import Path

import re

import torch
from omegaconf import OmegaConf

from model.parts import TIME_MIXERS, mixer_of_block

from . import peft, peft_base
from .. import runs
from ..errors import PipelineError


def checkpoint_weights(ckpt_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights of one of our checkpoints. A slim PEFT checkpoint holds only what PEFT
    trained: its base is rebuilt from the run's train.init_from (refused if its digest changed)."""
    run_cfg = OmegaConf.load(ckpt_dir.parent / runs.RUN_CONFIG)
    tag_dir = ckpt_dir / tag
    weights = runs.consolidated_state_dict(ckpt_dir, tag, runs.checkpoint_zero_stage(tag_dir, run_cfg))
    if peft_base.recorded(tag_dir)[0] is None:
        return weights
    peft_cfg = peft.PeftConfig(**OmegaConf.to_container(run_cfg.peft))
    model = peft_base.build_base(runs.checkpoint_model_config(tag_dir, run_cfg), peft_cfg,
                                 int(run_cfg.train.seed))
    source = run_cfg.train.init_from
    if source:
        load_matching(model, source, bool(run_cfg.train.init_from_cross_kind))
    peft_base.check_base(ckpt_dir / tag, peft_base.identify(model, peft_cfg, source))
    full = {name: t.float() for name, t in model.state_dict().items()}
    full.update(weights)
    return full


def source_kind(path: Path) -> str:
    """What `path` is, or a PipelineError saying what was expected."""
    if path.is_file() and path.suffix == ".safetensors":
        return "safetensors"
    if path.is_file() and path.suffix == ".pth":
        return "reference"
    if (path / "model.safetensors").is_file():
        return "export"
    if runs.is_complete(path):
        return "checkpoint"
    if runs.checkpoints_of(path).is_dir():
        return "run"
    raise PipelineError(f"train.init_from={path}: not a run dir, a complete checkpoint dir, an "
                        "export dir, a .safetensors file or a reference .pth checkpoint")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    kind = source_kind(path)
    if kind == "safetensors":
        return load_file(str(path))
    if kind == "reference":
        from model.convert import ConvertError, from_reference, read_reference
        try:
            return from_reference(read_reference(path), tensors_only=True)[1]
        except (ConvertError, ValueError) as err:
            raise PipelineError(f"train.init_from={path}: {err}") from None
    if kind == "export":
        return load_file(str(path / "model.safetensors"))
    if kind == "checkpoint":
        return checkpoint_weights(path.parent, path.name)
    tag = runs.find_resume_tag(runs.checkpoints_of(path))
    if tag is None:
        raise PipelineError(f"train.init_from={path}: the run has no complete checkpoint")
    return checkpoint_weights(runs.checkpoints_of(path), tag)


_BLOCK = re.compile(r"blocks\.(\d+)\.")


def block_mixers(names) -> dict[int, str]:
    """Block index -> its registered time mixer, read off our parameter names (each mixer has
    parameters no other has all of: its `signature`)."""
    per_block: dict[int, set[str]] = {}
    for name in names:
        if m := re.match(r"blocks\.(\d+)\.(.+)$", name):
            per_block.setdefault(int(m.group(1)), set()).add(m.group(2))
    kinds = {i: mixer_of_block(params) for i, params in per_block.items()}
    return {i: mixer for i, mixer in kinds.items() if mixer is not None}


def _kind(mixer: str) -> str:
    """The block kind a time mix makes: recurrent, GOLD or attention."""
    return TIME_MIXERS[mixer].family


def _title(mixer: str) -> str:
    return f"{TIME_MIXERS[mixer].title} ({mixer})"


def _refuse_other_recurrent_mixers(source: str, weights, own) -> None:
    theirs, ours = block_mixers(weights), block_mixers(own)
    clash = [i for i in sorted(ours) if i in theirs and theirs[i] != ours[i]
             and _kind(theirs[i]) == _kind(ours[i]) == "recurrent"]
    if clash:
        i = clash[0]
        raise PipelineError(
            f"train.init_from={source}: block {i} is {_title(theirs[i])} in the source but "
            f"{_title(ours[i])} in this model ({len(clash)} such block(s)): the names match but the "
            "computation differs. To upgrade a Finch run to GoldFinch build the paper's upgrade "
            "architecture (model.lower=finch, as configs/recipes/upgrade-finch-to-goldfinch.yaml does)")


def other_kind_names(weights, own) -> list[str]:
    """Source tensors of blocks whose kind (recurrent, GOLD, Llama) differs from this model's
    block at the same index."""
    theirs, ours = block_mixers(weights), block_mixers(own)
    differs = {i for i in theirs if i in ours and _kind(theirs[i]) != _kind(ours[i])}
    return sorted(n for n in weights if (m := _BLOCK.match(n)) and int(m.group(1)) in differs)


def load_matching(model: torch.nn.Module, source: str, cross_kind: bool = False
                  ) -> dict[str, list[str]]:
    """Copy every parameter (and persistent buffer) whose name and shape match; returns the
    loaded, new and ignored names (`other_kind`: those ignored because their block is of another
    kind, unless `cross_kind`). A name that matches with another shape is an error (a different
    width or arch), as is a source that matches nothing or whose recurrent blocks use another
    mixer."""
    weights = read_weights(Path(source))
    own = model.state_dict(keep_vars=True)
    _refuse_other_recurrent_mixers(source, weights, own)
    other_kind = [] if cross_kind else other_kind_names(weights, own)
    skipped = set(other_kind)
    weights = {n: t for n, t in weights.items() if n not in skipped}
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
            "ignored": sorted([*(n for n in weights if n not in own), *other_kind]),
            "other_kind": other_kind}
