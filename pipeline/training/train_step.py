"""One optimizer step: set the learning rates, run the objective's micro-batches, count the step
in the train state and return its record (the metrics.jsonl line, before validation adds to it)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import freezing, phase_switch
from ..instruments import Instruments
from .distributed import Dist, all_mean, all_means
from .flops import flops_per_token, peak_flops
from .schedule import scheduled_lr
from .train_state import TrainState


@dataclass
class Trainee:
    """What trains in the current freeze phase: its engine, trainable parameter count and
    objective. A phase switch makes a new one; the optimizer state's size is measured after the
    phase's first step (the state exists only then)."""
    engine: object
    trainable: int
    objective: object
    optimizer_bytes: int | None = None

    def optimizer_state_bytes(self) -> int:
        if self.optimizer_bytes is None:
            self.optimizer_bytes = phase_switch.optimizer_state_bytes(self.engine)
        return self.optimizer_bytes


@dataclass(frozen=True)
class StepContext:
    """What every step of a run shares: its config, ranks, data and throughput yardsticks."""
    cfg: object
    dist: Dist
    stream: object
    next_batch: object  # () -> a [micro_batch, ctx+1] window batch
    tokens_per_step: int
    flops_per_token: float
    peak_flops: float | None
    sources: int  # data sources (a mixture logs tokens per source)
    instruments: Instruments

    @classmethod
    def of(cls, cfg, dist: Dist, module, stream, next_batch, sources: int,
           instruments: Instruments) -> "StepContext":
        t = cfg.train
        return cls(cfg, dist, stream, next_batch,
                   t.micro_batch * t.grad_accum * dist.world * cfg.model.ctx_len,
                   flops_per_token(module, cfg.model), peak_flops(dist.device, t.peak_tflops), sources,
                   instruments)


def set_lr(engine, cfg, step: int, tokens: int, tokens_per_step: int,
           phase: int) -> tuple[float, float | None]:
    """Set every group's lr for the step after `step` completed ones. The groups a freeze phase
    newly trains (not carried over) ramp up over its warmup_steps. Returns the scheduled lr and
    the one the newly trained groups got (before their lr_scale; None when there are none)."""
    lr = scheduled_lr(cfg, step, tokens, tokens_per_step, phase)
    ramp = freezing.new_params_lr_factor(cfg.freeze, phase, step)
    lr_new = None
    for group in engine.optimizer.param_groups:
        new = phase > 0 and not group.get("carried", True)
        group["lr"] = lr * group.get("lr_scale", 1.0) * (ramp if new else 1.0)
        lr_new = group["lr"] / group.get("lr_scale", 1.0) if new else lr_new
    return lr, lr_new


def optimizer_step(engine, objective, ctx: StepContext, step: int) -> tuple[float, dict[str, float], bool]:
    """One optimizer step over grad_accum micro-batches of the phase's objective: (mean loss over
    ranks, the means of its parts (distillation's ce/kl/align), step applied).

    A non-finite loss makes non-finite gradients, which DeepSpeed's optimizer detects and skips
    the update for (the stage-0 optimizer does the same), so a bad batch never reaches the weights.
    """
    loss_sum, dist = 0.0, ctx.dist
    for _ in range(ctx.cfg.train.grad_accum):
        loss = objective(engine, ctx.next_batch().to(dist.device, non_blocking=True))
        loss = ctx.instruments.loss(step, loss)
        engine.backward(loss)
        engine.step()
        loss_sum += loss.item()
    parts = all_means(objective.take_parts(), dist.device)
    return all_mean(loss_sum / ctx.cfg.train.grad_accum, dist.device), parts, engine.was_step_applied()


def train_step(trainee: Trainee, state: TrainState, ctx: StepContext) -> tuple[dict, bool]:
    """Train one step and advance `state`; returns (the step's record, its update was applied)."""
    cfg, engine = ctx.cfg, trainee.engine
    t0 = time.perf_counter()
    lr, lr_new = set_lr(engine, cfg, state.step, state.tokens, ctx.tokens_per_step, state.phase)
    loss, parts, applied = optimizer_step(engine, trainee.objective, ctx, state.step + 1)
    state.advance(ctx.tokens_per_step, applied)
    tokens_per_s = ctx.tokens_per_step / (time.perf_counter() - t0)
    record = {"step": state.step, "loss": loss, "lr": lr, "tokens": state.tokens,
              "grad_norm": float(engine.get_global_grad_norm() or 0.0) if applied else None,
              "tokens_per_s": tokens_per_s, "skipped_steps": state.skipped_steps, **parts}
    if cfg.freeze.phases or cfg.peft.method:
        record.update(phase=state.phase, trainable_params=trainee.trainable,
                      optimizer_state_bytes=trainee.optimizer_state_bytes(), lr_new_params=lr_new)
    record["mfu"] = ctx.flops_per_token * tokens_per_s / ctx.peak_flops if ctx.peak_flops else None
    if ctx.sources > 1:
        record.update({f"tokens/{k}": v for k, v in ctx.stream.tokens_by_source(state.step).items()})
    return record, applied

