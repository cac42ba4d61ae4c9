"""AdamW parameter groups as the reference builds them, and the AdamW that skips non-finite steps."""
from __future__ import annotations

import torch
from torch import nn

# The reference's get_optim_groups trains the decay base at 2x: Finch's `decay_base` (its
# time_decay), RWKV-7's `w0` and Eagle's `time_decay`. The bonus trains at 1x (train_stage 3).
FAST_LR_NAMES = ("decay_base", "w0", "time_decay")
FAST_LR_SCALE = 2.0
# only the weight of these modules is a plain matrix; LoRAs, token-shift amounts, decays, bonuses
# and norms are raw parameters or norm weights, so new mixers get no decay without being listed
DECAYED_MODULES = (nn.Linear, nn.Embedding)


def decayed_names(model: nn.Module) -> set[str]:
    """Names of the parameters that take weight decay: the `weight` matrix of a Linear or an
    Embedding. The reference decides by name (>=2-D, not a `_w1/_w2` LoRA, token shift, decay or
    bonus), which picks exactly these; deciding by module type needs no list of names."""
    return {f"{mod_name}.weight" if mod_name else "weight"
            for mod_name, module in model.named_modules()
            if isinstance(module, DECAYED_MODULES) and getattr(module, "weight", None) is not None
            and module.weight.dim() >= 2}


def param_groups(model: nn.Module, weight_decay: float, carried: set[str] | None = None,
                 lr_scale: float = 1.0) -> list[dict]:
    """Weight decay on plain matrices only; 2x learning rate for the decay base.

    Each group carries `lr_scale` (multiplied into the scheduled lr every step), the names of its
    parameters (`names`), and whether they carry Adam state over from the phase before
    (`carried`): Adam keeps one step count per group under ZeRO, so carried and new parameters
    never share a group. Frozen parameters (requires_grad=False) hold no optimizer state.
    """
    carried = carried or set()
    decayed = decayed_names(model)
    buckets: dict[tuple[float, float, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        fast = name.rsplit(".", 1)[-1] in FAST_LR_NAMES
        decay = weight_decay if name in decayed else 0.0
        key = (FAST_LR_SCALE if fast else 1.0, decay, name in carried)
        buckets.setdefault(key, []).append((name, p))
    return [{"params": [p for _, p in items], "names": [n for n, _ in items],
             "weight_decay": wd, "lr_scale": scale * lr_scale, "carried": is_carried}
            for (scale, wd, is_carried), items in sorted(buckets.items())]


class FiniteAdamW(torch.optim.AdamW):
    """AdamW that skips a step whose gradients are not all finite, as DeepSpeed's ZeRO optimizers
    do for stages 1-3; its `overflow` flag is how the DeepSpeed engine learns the step was skipped
    (for ZeRO stage 0, where the engine runs this optimizer directly)."""

    overflow = False

    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms = torch._foreach_norm(grads) if grads else []
        self.overflow = bool(grads) and not bool(torch.isfinite(torch.stack(norms)).all())
        return None if self.overflow else super().step(closure)
