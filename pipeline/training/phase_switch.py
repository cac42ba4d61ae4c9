"""Phase boundaries under DeepSpeed ZeRO: rebuild the engine for the new trainable set.

ZeRO partitions only the parameters its optimizer was built with, so a new trainable set needs a
new engine. The switch gathers the full fp32 weights and, for every trainable parameter, its Adam
moments and step count; builds a fresh model and engine for the new phase (frozen parameters get
no gradient or optimizer state); takes one zero-gradient step at lr 0 so that the optimizer state
exists; then writes the carried moments back and sets the step counts (carried parameters keep
theirs, newly trained ones start at 0). The same code runs live and on resume, so both agree bitwise.
"""
from __future__ import annotations

import gc

import torch

from model import build_model

from . import freezing, peft, peft_base
from .engine import build_engine
from .loss import L2WRAP_ATTR, set_l2wrap


def _inner(engine):
    """The torch optimizer that holds the Adam state (inside a ZeRO or bf16 wrapper, or bare)."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def _relink(engine) -> None:
    """ZeRO-1/2 and the bf16 optimizer link per-parameter views of the Adam state after the first
    param group's first step, before the other groups have any state; link again now."""
    opt = engine.optimizer
    if hasattr(opt, "_hp_optimizer_states_linked"):
        opt._hp_optimizer_states_linked = False
        opt._lazy_init_hp_params_optimizer_state()


def _full_value(p: torch.nn.Parameter) -> torch.Tensor:
    from deepspeed.utils import safe_get_full_fp32_param

    full = safe_get_full_fp32_param(p) if p.requires_grad else None
    if full is not None:
        return full
    if hasattr(p, "ds_id"):  # a ZeRO-3 partitioned parameter: gather it (collective)
        import deepspeed

        with deepspeed.zero.GatheredParameters([p]):
            return p.detach().float().clone()
    return p.detach().float()


def _full_moments(engine, p: torch.nn.Parameter) -> tuple[torch.Tensor, torch.Tensor] | None:
    from deepspeed.utils import safe_get_full_optimizer_state

    if hasattr(p, "ds_id") or hasattr(p, "_hp_mapping"):
        try:
            m = safe_get_full_optimizer_state(p, "exp_avg")
            v = safe_get_full_optimizer_state(p, "exp_avg_sq")
        except ValueError:  # no optimizer step taken yet: nothing to carry
            return None
        return None if m is None else (m, v)
    state = _inner(engine).state.get(p, {})
    return (state["exp_avg"], state["exp_avg_sq"]) if "exp_avg" in state else None


def _states_with_groups(engine):
    """(Adam state, its param group) pairs. ZeRO-3 fills its groups' params only while stepping,
    so there the flat fp32 partitions are matched to groups through its sub-group table."""
    opt, inner = engine.optimizer, _inner(engine)
    if hasattr(opt, "fp32_partitioned_groups_flat"):
        pairs = [(flat, inner.param_groups[opt.sub_group_to_group_id[i]])
                 for i, flat in enumerate(opt.fp32_partitioned_groups_flat)]
    else:
        pairs = [(flat, group) for group in inner.param_groups for flat in group["params"]]
    return [(inner.state[flat], group) for flat, group in pairs if flat in inner.state]


def adam_step_count(engine) -> int:
    steps = [int(st["step"]) for st in _inner(engine).state.values() if "step" in st]
    return max(steps, default=0)


def optimizer_state_bytes(engine) -> int:
    """Bytes of optimizer state on this rank: proportional to the trainable (partitioned) params."""
    return sum(t.numel() * t.element_size() for st in _inner(engine).state.values()
               for t in st.values() if torch.is_tensor(t))


def gather(engine) -> tuple[dict, dict, int]:
    """(full fp32 weights and persistent buffers by name, Adam moments by name for trainable
    params, Adam step count), on the CPU. Collective: every rank calls it."""
    weights, moments = {}, {}
    _relink(engine)
    for name, p in engine.module.named_parameters():
        weights[name] = _full_value(p).cpu().clone()
        if p.requires_grad and (mv := _full_moments(engine, p)) is not None:
            moments[name] = (mv[0].detach().float().cpu().clone(), mv[1].detach().float().cpu().clone())
    saved = engine.module.state_dict(keep_vars=True).keys()  # ZeRO never partitions buffers
    weights.update({name: b.detach().cpu().clone() for name, b in engine.module.named_buffers()
                    if name in saved})
    return weights, moments, adam_step_count(engine)


def _prime(engine, grad_accum: int, device: torch.device) -> None:
    """One optimizer step with zero gradients at lr 0: creates the Adam state, moves nothing.
    L2Wrap is off meanwhile: its gradient ignores the loss's scale, so it would reach the moments."""
    l2wrap = getattr(engine.module, L2WRAP_ATTR, 0.0)
    set_l2wrap(engine.module, 0.0)
    for group in engine.optimizer.param_groups:
        group["lr"] = 0.0
    idx = torch.zeros(1, 2, dtype=torch.long, device=device)
    for _ in range(grad_accum):
        loss, _ = engine(idx[:, :1], targets=idx[:, 1:])
        engine.backward(loss * 0.0)
        engine.step()
    set_l2wrap(engine.module, l2wrap)


def _set_moments(engine, p, m: torch.Tensor, v: torch.Tensor) -> None:
    from deepspeed.utils import safe_set_full_optimizer_state

    if hasattr(p, "ds_id") or hasattr(p, "_hp_mapping"):
        safe_set_full_optimizer_state(p, m.to(p.device), "exp_avg")
        safe_set_full_optimizer_state(p, v.to(p.device), "exp_avg_sq")
        return
    state = _inner(engine).state[p]
    state["exp_avg"].copy_(m)
    state["exp_avg_sq"].copy_(v)


def new_model(cfg, weights: dict | None = None):
    """A model for this run; building it never moves the training RNG (it is restored exactly).
    A PEFT model is built from the seed alone, so its base can be rebuilt anywhere."""
    if cfg.peft.method:
        model = peft_base.build_base(cfg.model, cfg.peft, cfg.train.seed)
    else:
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg.model)
    if weights is not None:
        model.load_state_dict(weights)
    model.grad_ckpt, model.fused_ce = cfg.train.grad_ckpt, cfg.train.fused_ce
    set_l2wrap(model, cfg.train.l2wrap)
    return model


def carried_names(cfg, model, phase: int) -> set[str]:
    """Parameters trainable in this phase and the one before: they keep their Adam state. Known
    from the config alone, so an engine rebuilt on resume has the same param groups as the live
    one had when it saved."""
    if phase == 0:
        return set()
    return (freezing.trainable_names(model, cfg.freeze.phases[phase])
            & freezing.trainable_names(model, cfg.freeze.phases[phase - 1]))


def build_phase_engine(cfg, phase: int, world: int, device: torch.device, model,
                       carry: tuple[dict, dict, int] | None = None, universal: bool = False):
    """(engine, trainable parameter count) for `phase` over `model`; with `carry` (what `gather`
    returned for the engine before), fp32 masters, Adam moments and step counts carry over.
    `universal`: the engine is to load a checkpoint written by another number of ranks."""
    freezing.apply(model, cfg.freeze, phase)
    trainable = peft.restrict(model, cfg.peft)
    weights, moments, adam_step = carry or ({}, {}, 0)
    carried = carried_names(cfg, model, phase)
    lr_scale = cfg.freeze.phases[phase].lr_scale if cfg.freeze.phases else 1.0
    engine = build_engine(model, cfg.train, world, carried=carried, lr_scale=lr_scale,
                          universal=universal)
    if carry is None:
        return engine, trainable
    from deepspeed.utils import safe_set_full_fp32_param

    for name, p in engine.module.named_parameters():
        if p.requires_grad:  # bf16 runs: the fp32 masters, not their bf16 rounding
            safe_set_full_fp32_param(p, weights[name].to(device))
    _prime(engine, cfg.train.grad_accum, device)
    _relink(engine)
    for name, p in engine.module.named_parameters():
        if name in carried and name in moments:
            _set_moments(engine, p, *moments[name])
    for state, group in _states_with_groups(engine):
        if "step" in state:
            state["step"] = torch.full_like(torch.as_tensor(state["step"]),
                                            adam_step if group.get("carried") else 0)
    return engine, trainable


def switch(engine, cfg, phase: int, world: int, device: torch.device):
    """Leave the current phase's engine and return (engine, trainable count) for `phase`."""
    carry = gather(engine)
    identity = peft_base.identity_of(engine.module)
    engine.destroy()
    del engine
    gc.collect()
    model = new_model(cfg, carry[0])
    if identity is not None:
        setattr(model, peft_base.ATTR, identity)
    return build_phase_engine(cfg, phase, world, device, model, carry)
