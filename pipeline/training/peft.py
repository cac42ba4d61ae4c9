"""`peft.*`: Bone/Bat fine-tuning. The run's model gets its target Linears wrapped (model/bone.py)
and only the blocks plus `train_also` train; freeze phases, if any, choose among those.

`train_also` follows RWKV-PEFT's `train_parts` (default `[time, norms]`): `time` is every mixer
parameter outside a Linear or a norm (token-shift amounts, decays, bonuses, the ddlerp and decay
LoRAs; RWKV-PEFT matches `time` in the names, which takes the channel mix's `time_maa_k/r` too),
`norms` every norm's parameters (a Llama has no `time` ones); any other entry is a freeze selector
(`head`, a glob, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from torch import nn

from common.errors import UserError

from model.bone import BatLinear, BoneLinear, wrap

from . import freezing

DEFAULT_TARGETS = ["att.receptance", "att.key", "att.value", "att.output", "att.gate",
                   "ffn.key", "ffn.receptance", "ffn.value",
                   "att.query", "att.qkv", "ffn.gate", "ffn.up", "ffn.down"]


@dataclass
class PeftConfig:
    method: Optional[str] = None  # bone | bat; unset: no PEFT, everything trains
    r: int = 64  # block size
    targets: List[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    train_also: List[str] = field(default_factory=lambda: ["time", "norms"])


def _time_params(model: nn.Module) -> set[str]:
    """Parameters of time and channel mixers that belong to no Linear and no norm."""
    skip = (nn.Linear, nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)
    return {f"{mod}.{p}" for mod, m in model.named_modules()
            if {"att", "ffn"} & set(mod.split("."))
            if not isinstance(m, skip)
            for p, _ in m.named_parameters(recurse=False)}


def also_names(model: nn.Module, train_also: list[str]) -> set[str]:
    names: set[str] = set()
    for i, entry in enumerate(train_also):
        picked = _time_params(model) if entry == "time" else freezing.select(model, entry)
        if not picked and entry != "time":  # a Llama has no time parameters
            raise UserError(f"peft.train_also[{i}]={entry!r} matches no parameter of this model "
                            "(time, norms, or a freeze selector)")
        names |= picked
    return names


def attach(model: nn.Module, cfg: PeftConfig) -> set[str]:
    """Wrap the targets in place; returns every parameter name PEFT trains."""
    blocks = wrap(model, cfg.method, cfg.r, list(cfg.targets), tuple(DEFAULT_TARGETS))
    return set(blocks) | also_names(model, list(cfg.train_also))


def peft_names(model: nn.Module, cfg: PeftConfig) -> set[str]:
    """What PEFT trains in an already wrapped model."""
    blocks = {f"{n}.{m.tensor_name}" for n, m in model.named_modules()
              if isinstance(m, (BoneLinear, BatLinear))}
    return blocks | also_names(model, list(cfg.train_also))


def restrict(model: nn.Module, cfg: PeftConfig) -> int:
    """After the freeze phase set requires_grad: keep only what PEFT trains; returns the count."""
    if cfg.method:
        allowed = peft_names(model, cfg)
        for name, p in model.named_parameters():
            p.requires_grad_(p.requires_grad and name in allowed)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def validate(cfg: PeftConfig, meta_model: nn.Module,
             freeze: freezing.FreezeConfig | None = None) -> None:
    """Every peft.* mistake named before training starts (on a `meta` model: nothing allocated),
    and every freeze selector that picks only tensors PEFT keeps frozen (it would train nothing)."""
    if cfg.method is None:
        return
    trained = attach(meta_model, cfg)
    for i, phase in enumerate(freeze.phases if freeze else []):
        for selector in phase.train:
            picked = freezing.select(meta_model, selector)
            if picked and not picked & trained:
                raise UserError(
                    f"freeze.phases[{i}]: selector {selector!r} picks only tensors that "
                    f"peft.method={cfg.method} keeps frozen (e.g. {sorted(picked)[0]}); under PEFT a "
                    "phase chooses among the Bone/Bat blocks and peft.train_also (add it there, or "
                    "select e.g. '*.bat', '*.bone', norms)")
