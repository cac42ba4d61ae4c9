"""Layer-wise phased freezing: which parameters train in which phase.

`freeze.phases` is an ordered list; phase i covers the optimizer steps before its `until_step`
(the last phase has none and runs to the end). Each phase trains the union of its selectors and
freezes everything else:

    all | finch | gold | mixers | embeddings | head | kv_compression | norms | layers:A-B | a glob

`head` includes the final norm that feeds it; `norms` is every LayerNorm/RMSNorm parameter;
`mixers` every time-mix parameter, recurrent and GOLD, with the key compression that only GOLD's
attention reads (distillation's align stage trains them).
A phase's `loss` (`ce`, `align`, `kl` or a weighted sum) is pipeline/distill/objective.py's.
A phase after the first may carry `warmup_steps`: the parameters it trains that the phase before
froze start with fresh Adam state, whose first updates are the largest, so their lr ramps up
(see `new_params_lr_factor`).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from torch import nn

from common.errors import UserError


NAMED = ("all", "finch", "gold", "mixers", "embeddings", "head", "kv_compression", "norms")
LAYERS = re.compile(r"^layers:(\d+)-(\d+)$")


@dataclass
class PhaseConfig:
    until_step: Optional[int] = None
    until_tokens: Optional[int] = None  # instead of until_step: a budget in tokens (pipeline/config.py)
    train: List[str] = field(default_factory=list)
    lr_scale: float = 1.0
    lr: Optional[float] = None        # set: this phase runs its own schedule, lr -> lr_final
    lr_final: Optional[float] = None  # (train.lr_schedule's shape over the phase's steps)
    warmup_steps: int = 0  # newly trainable parameters ramp up over this many steps (phase > 0)
    loss: Any = "ce"  # ce | align | kl | {kl: 0.5, ce: 0.5} (pipeline/distill/objective.py)


@dataclass
class FreezeConfig:
    phases: List[PhaseConfig] = field(default_factory=list)


def _block_index(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() else None


def _norm_params(model: nn.Module) -> set[str]:
    norms = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)
    return {f"{mod_name}.{p_name}" if mod_name else p_name
            for mod_name, module in model.named_modules() if isinstance(module, norms)
            for p_name, _ in module.named_parameters(recurse=False)}


def select(model: nn.Module, selector: str) -> set[str]:
    """Parameter names one selector picks (may be empty; `validate` turns that into an error)."""
    names = [n for n, _ in model.named_parameters()]
    kinds = {i: getattr(block, "kind", "") for i, block in enumerate(getattr(model, "blocks", []))}
    if selector == "all":
        return set(names)
    if selector in ("finch", "gold"):
        return {n for n in names if kinds.get(_block_index(n)) == selector}
    if selector == "mixers":
        return {n for n in names if n.startswith("kv_compression.")
                or (_block_index(n) is not None and n.split(".")[2] == "att")}
    if selector == "embeddings":
        return {n for n in names if n.startswith("emb.")}
    if selector == "head":
        return {n for n in names if n.startswith(("head.", "ln_out."))}
    if selector == "kv_compression":
        return {n for n in names if n.startswith("kv_compression.")}
    if selector == "norms":
        return _norm_params(model)
    match = LAYERS.match(selector)
    if match:
        lo, hi = int(match.group(1)), int(match.group(2))
        return {n for n in names if (i := _block_index(n)) is not None and lo <= i <= hi}
    return {n for n in names if fnmatch.fnmatchcase(n, selector)}


def trainable_names(model: nn.Module, phase: PhaseConfig) -> set[str]:
    return set().union(*(select(model, s) for s in phase.train)) if phase.train else set()


def validate(cfg: FreezeConfig, model: nn.Module, max_steps: int) -> None:
    """Every mistake named before training starts: order, empty selections, unknown selectors."""
    phases = cfg.phases
    n_blocks = len(getattr(model, "blocks", []))
    previous = 0
    for i, phase in enumerate(phases):
        where = f"freeze.phases[{i}]"
        last = i == len(phases) - 1
        if last and phase.until_step is not None:
            raise UserError(f"{where}.until_step={phase.until_step}: the last phase runs to the end "
                            "and takes no until_step")
        if not last:
            if phase.until_step is None:
                raise UserError(f"{where}.until_step is missing: every phase but the last needs one")
            if phase.until_step <= previous:
                raise UserError(f"{where}.until_step={phase.until_step}: phases must be in increasing "
                                f"order of until_step (the one before ends at {previous})")
            previous = phase.until_step
        if phase.lr_scale <= 0:
            raise UserError(f"{where}.lr_scale={phase.lr_scale}: must be > 0")
        if phase.lr_final is not None and phase.lr is None:
            raise UserError(f"{where}.lr_final={phase.lr_final}: needs the phase's own lr")
        for key in ("lr", "lr_final"):
            if getattr(phase, key) is not None and getattr(phase, key) < 0:
                raise UserError(f"{where}.{key}={getattr(phase, key)}: must be >= 0")
        if phase.warmup_steps < 0 or (i == 0 and phase.warmup_steps):
            raise UserError(f"{where}.warmup_steps={phase.warmup_steps}: must be >= 0, and 0 in the "
                            "first phase (train.warmup_steps warms the start up)")
        if not phase.train:
            raise UserError(f"{where}.train is empty: that phase would freeze every parameter")
        for selector in phase.train:
            match = LAYERS.match(selector)
            if match and not int(match.group(1)) <= int(match.group(2)) < n_blocks:
                raise UserError(f"{where}: selector {selector!r} is outside the model's blocks "
                                f"0-{n_blocks - 1}")
            if not select(model, selector):
                known = ", ".join(NAMED) + ", layers:A-B, or a glob over parameter names"
                raise UserError(f"{where}: selector {selector!r} matches no parameter of this "
                                f"{model.cfg.arch} model (selectors: {known})")
    if phases and phases[-1] is not phases[0] and previous >= max_steps:
        raise UserError(f"freeze.phases: the last boundary (until_step={previous}) is not before "
                        f"train.max_steps={max_steps}, so the last phase would never run")


def phase_at(cfg: FreezeConfig, step: int) -> int:
    """Index of the phase that the optimizer step after `step` completed ones belongs to."""
    for i, phase in enumerate(cfg.phases):
        if phase.until_step is None or step < phase.until_step:
            return i
    return max(len(cfg.phases) - 1, 0)


def new_params_lr_factor(cfg: FreezeConfig, phase: int, step: int) -> float:
    """The lr factor of the parameters newly trainable in `phase`, for the optimizer step after
    `step` completed ones: 0.2 + 0.8·s/n over the n = warmup_steps steps s = 0, 1, ... since the
    phase began (the trainer's own warm-up shape), then 1. A function of the global step only, so
    a resumed run ramps exactly as the uninterrupted one."""
    if phase == 0 or not cfg.phases:
        return 1.0
    n = cfg.phases[phase].warmup_steps
    since = step - cfg.phases[phase - 1].until_step
    return 0.2 + 0.8 * since / n if 0 <= since < n else 1.0


def apply(model: nn.Module, cfg: FreezeConfig, index: int) -> int:
    """Set requires_grad for phase `index` (everything trains without phases); returns the count
    of trainable parameters."""
    chosen = trainable_names(model, cfg.phases[index]) if cfg.phases else None
    for name, p in model.named_parameters():
        p.requires_grad_(chosen is None or name in chosen)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

