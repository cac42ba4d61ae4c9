"""The learning-rate schedule of the reference's trainer, driven by the global step and the tokens
seen, so a resumed run computes exactly the lr the uninterrupted one did.

Warm-up scales the lr by 0.2 + 0.8·step/warmup_steps for the first warmup_steps optimizer steps
(step 0 trains at 0.2·lr). The decay runs over tokens after the warm-up: progress
p = (tokens − warmup tokens) / (total tokens − warmup tokens), clamped to [0, 1], where tokens are
those seen before this step (the reference's global_step × batch × ctx) and total tokens are
`train.total_tokens` (the reference's my_exit_tokens) or else `train.max_steps` steps' worth.

A freeze phase with its own `lr` (distillation's stages: ARWKV and RADLADS run each stage as its
own schedule) decays from its lr to its lr_final over its own steps instead (`phase_lr_at`).
"""
from __future__ import annotations

import math

from common.errors import UserError


SCHEDULES = ("cos_quarter", "cosine", "linear", "exp")


def decayed(lr: float, lr_final: float, p: float, schedule: str) -> float:
    """The lr at decay progress p in [0, 1] (lr at p=0, lr_final at p=1)."""
    if schedule == "cos_quarter":  # the reference's 'cos': a quarter period, steepest at the end
        return lr_final + (lr - lr_final) * math.cos(math.pi / 2 * p)
    if schedule == "cosine":
        return lr_final + 0.5 * (lr - lr_final) * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return lr_final + (lr - lr_final) * (1.0 - p)
    if schedule == "exp":
        return lr * math.exp(math.log(lr_final / lr) * p)
    raise UserError(f"train.lr_schedule={schedule!r}: expected one of {', '.join(SCHEDULES)}")


def total_tokens(train, tokens_per_step: int) -> int:
    return train.total_tokens or train.max_steps * tokens_per_step


def progress(tokens: int, total: int, warmup_tokens: int) -> float:
    span = total - warmup_tokens
    if span <= 0:
        return 1.0 if tokens >= total else 0.0
    return min(max((tokens - warmup_tokens) / span, 0.0), 1.0)


def lr_at(step: int, tokens: int, train, tokens_per_step: int) -> float:
    """The base lr of the optimizer step after `step` completed ones and `tokens` tokens seen
    (each param group multiplies it by its own lr_scale)."""
    warmup_tokens = train.warmup_steps * tokens_per_step
    p = progress(tokens, total_tokens(train, tokens_per_step), warmup_tokens)
    lr = decayed(train.lr, train.lr_final, p, train.lr_schedule)
    if step < train.warmup_steps:
        lr *= 0.2 + 0.8 * step / train.warmup_steps
    return lr


def phase_lr_at(step: int, start: int, end: int, lr: float, lr_final: float | None,
                schedule: str) -> float:
    """A phase's own lr for the optimizer step after `step` completed ones: lr at the phase's
    first step `start`, lr_final (unset: lr, a constant rate) at its end `end`."""
    p = min(max((step - start) / max(end - start - 1, 1), 0.0), 1.0)
    return decayed(lr, lr if lr_final is None else lr_final, p, schedule)


def scheduled_lr(cfg, step: int, tokens: int, tokens_per_step: int, phase: int) -> float:
    """The base lr of the step after `step`: the phase's own schedule when it has an lr, else
    the run's; train.warmup_steps warms the first phase up either way."""
    phases = cfg.freeze.phases
    if not phases or phases[phase].lr is None:
        return lr_at(step, tokens, cfg.train, tokens_per_step)
    start = phases[phase - 1].until_step if phase > 0 else 0
    end = phases[phase].until_step or cfg.train.max_steps
    lr = phase_lr_at(step, start, end, phases[phase].lr, phases[phase].lr_final,
                     cfg.train.lr_schedule)
    warmup = cfg.train.warmup_steps
    return lr * (0.2 + 0.8 * step / warmup) if phase == 0 and step < warmup else lr
