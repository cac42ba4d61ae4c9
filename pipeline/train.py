"""Train a GoldFinch (or Finch, or Llama) model with DeepSpeed ZeRO.

    python -m pipeline.train [--config configs/train/X.yaml] [key=value ...]

Runs as one plain process or under `deepspeed` / `torchrun`. Re-running the same command resumes
from the newest complete checkpoint (train.resume=auto) and continues the same MLflow run.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.cli import exit_on, user_error_types

from kernels import set_wkv_backend
from model import build_model

from .training import checkpointing, faults, freezing, phase_switch, run_guard
from .records import run_status
from .config import RunConfig, fit_to_world, parse_args, resolve_precision, to_yaml
from .data.sources import TrainingData, open_sources
from .distill import config as distill
from .data.val_windows import ValWindows, check_split, summed_loss
from .training.distributed import Dist, all_mean, all_means, init_distributed
from .errors import PipelineError
from .training.flops import flops_per_token, peak_flops
from .training.metrics import MetricsLog
from .training.schedule import scheduled_lr
from .training.preemption import StopRequest
from .data.prefetch import Prefetcher
from .training.progress import Progress
from .records.run_info import finish_run, run_tags
from .training.startup import open_run
from .records.tracking import Tracker
from .training.init_from import source_kind
from .eval import periodic


def lm_loss(engine, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over a [B, ctx+1] window batch (fused when train.fused_ce)."""
    loss, _ = engine(batch[:, :-1], targets=batch[:, 1:])
    return loss


def val_windows(data: TrainingData, cfg: RunConfig, dist: Dist) -> ValWindows:
    """train.val_batches global batches of val windows, the same ones every time and for any
    number of ranks, so values compare across a run and between runs."""
    t = cfg.train
    count = t.val_batches * t.micro_batch * t.grad_accum * dist.world
    return ValWindows(data.first, cfg.model.ctx_len, count, dist.rank, dist.world)


@torch.no_grad()
def validate(engine, val: ValWindows, cfg: RunConfig, dist: Dist) -> float:
    """Mean loss over every val window: the ranks' sums of loss x tokens and of tokens, added up."""
    engine.eval()
    sums = summed_loss(lambda batch: lm_loss(engine, batch), val, cfg.train.micro_batch, dist.device)
    engine.train()
    torch.distributed.all_reduce(sums)
    return (sums[0] / sums[1]).item()


def set_lr(engine, cfg: RunConfig, step: int, tokens: int, tokens_per_step: int,
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


def report_init(report: dict, source: str, run_dir: Path, tracker) -> None:
    """Print and keep which parameters train.init_from loaded, left new, and ignored."""
    text = json.dumps({"source": source, **report}, indent=1)
    (run_dir / "init_from.json").write_text(text + "\n")
    tracker.log_event(text, "init_from.json")
    print(f"init_from {source}: loaded {len(report['loaded'])} parameters, "
          f"{len(report['new'])} new (initialised), {len(report['ignored'])} ignored; "
          f"lists in {run_dir / 'init_from.json'}", flush=True)
    for kind in ("new", "ignored"):
        if report[kind]:
            print(f"  {kind}: {', '.join(report[kind])}", flush=True)


def announce_phase(phase: int, step: int, trainable: int, progress, tracker) -> None:
    line = f"freeze phase {phase} from step {step + 1}: {trainable:,} trainable parameters"
    progress.write(line)
    tracker.log_event(json.dumps({"phase": phase, "from_step": step + 1, "trainable": trainable}),
                      f"events/phase{phase}-step{step + 1}.json")


def prepare(cfg: RunConfig) -> tuple[RunConfig, TrainingData]:
    """Open the data dir(s) and fit the model config to them; every error here names what is wrong
    before any process group or engine is started."""
    data = open_sources(cfg.data)
    if cfg.model.vocab_size is None:
        cfg = replace(cfg, model=replace(cfg.model, vocab_size=data.vocab_size))
    world = int(os.environ.get("WORLD_SIZE", 1))
    cfg = fit_to_world(cfg, world)
    cfg = resolve_precision(cfg, torch.cuda.is_available())  # before comparing with a saved run
    data.check_model(cfg.model.vocab_size, cfg.model.ctx_len, world)
    if cfg.train.val_every and cfg.train.val_batches:
        check_split(data.first, cfg.model.ctx_len)
    freezing.validate(cfg.freeze, build_model(cfg.model, device="meta"), cfg.train.max_steps)
    distill.check_student(cfg)
    teacher = distill.validate(cfg)
    if teacher is not None:
        distill.check_tokenizer(teacher, data.tokenizer_sha256, cfg.data.path,
                                cfg.train.allow_other_tokenizer)
    if cfg.train.init_from:
        source_kind(Path(cfg.train.init_from))
    run_dir = Path(cfg.train.out_dir) / cfg.train.run_name
    run_guard.check_same_run(cfg, run_dir)
    run_guard.check_tokenizer(cfg, run_dir, data.tokenizer_sha256)
    return cfg, data


def optimizer_step(engine, objective, next_batch, cfg: RunConfig, step: int, dist: Dist
                   ) -> tuple[float, dict[str, float], bool]:
    """One optimizer step over grad_accum micro-batches of the phase's objective: (mean loss over
    ranks, the means of its parts (distillation's ce/kl/align), step applied).

    A non-finite loss makes non-finite gradients, which DeepSpeed's optimizer detects and skips
    the update for (the stage-0 optimizer does the same), so a bad batch never reaches the weights.
    """
    loss_sum = 0.0
    for _ in range(cfg.train.grad_accum):
        loss = objective(engine, next_batch().to(dist.device, non_blocking=True))
        if faults.armed("nan_loss", step, dist.rank):
            loss = loss * float("nan")
        engine.backward(loss)
        engine.step()
        loss_sum += loss.item()
    parts = all_means(objective.take_parts(), dist.device)
    return all_mean(loss_sum / cfg.train.grad_accum, dist.device), parts, engine.was_step_applied()


def train(cfg: RunConfig, data: TrainingData) -> None:
    dist = init_distributed()
    cfg = resolve_precision(cfg, dist.device.type == "cuda")
    t = cfg.train
    set_wkv_backend(t.wkv_backend)
    run_dir = Path(t.out_dir) / t.run_name
    ckpt_dir = run_dir / "checkpoints"

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    stream = data.stream(cfg, dist.rank, dist.world)  # global batches: any number of ranks
    val = val_windows(data, cfg, dist) if t.val_every and t.val_batches else None
    start = open_run(cfg, dist, ckpt_dir, stream)
    engine, phase = start.engine, start.phase
    teacher = distill.load_teacher(cfg, dist.device)
    objective = distill.objective_for(cfg, phase, teacher)
    step, tokens_seen, skipped = start.step, start.tokens, start.skipped_steps
    if dist.is_main:  # only now: a run that cannot start leaves its old config in place
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        if start.resumed_from:
            print(f"resumed from {start.resumed_from} at step {step}", flush=True)

    loader = Prefetcher(stream, t.micro_batch, t.prefetch) if t.prefetch else None
    next_batch = loader.next_batch if loader else lambda: stream.next_batch(t.micro_batch)
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=dist.is_main)
    metrics.truncate_after(step)
    tracker = Tracker(cfg.tracking, run_dir, enabled=dist.is_main)
    tags = run_tags(cfg, data, dist)  # collective: every rank takes part
    sigterm, stop, progress, status = run_status.SigtermRaises(), None, None, run_status.FAILED
    try:
        tracker.start(t.run_name, {**OmegaConf.to_container(OmegaConf.structured(cfg)),
                                   **({"trainable_params": start.trainable} if cfg.peft.method else {})},
                      tags)
        if start.init_report and dist.is_main:
            report_init(start.init_report, t.init_from, run_dir, tracker)
        stop = StopRequest()
        fpt = flops_per_token(engine.module, cfg.model)
        peak = peak_flops(dist.device, t.peak_tflops)
        tokens_per_step = t.micro_batch * t.grad_accum * dist.world * cfg.model.ctx_len
        progress = Progress(t.max_steps, step, enabled=dist.is_main)
        bad_in_a_row, state_bytes = 0, None
        while step < t.max_steps:
            if (want := freezing.phase_at(cfg.freeze, step)) != phase:
                phase, state_bytes = want, None
                engine, start.trainable = phase_switch.switch(engine, cfg, phase, dist.world, dist.device)
                objective = distill.objective_for(cfg, phase, teacher)
                announce_phase(phase, step, start.trainable, progress, tracker)
            t0 = time.perf_counter()
            lr, lr_new = set_lr(engine, cfg, step, tokens_seen, tokens_per_step, phase)
            loss, parts, applied = optimizer_step(engine, objective, next_batch, cfg, step + 1, dist)
            step += 1
            tokens_seen += tokens_per_step
            bad_in_a_row = 0 if applied else bad_in_a_row + 1
            skipped += not applied
            seconds = time.perf_counter() - t0
            record = {"step": step, "loss": loss, "lr": lr, "tokens": tokens_seen,
                      "grad_norm": float(engine.get_global_grad_norm() or 0.0) if applied else None,
                      "tokens_per_s": tokens_per_step / seconds, "skipped_steps": skipped, **parts}
            if cfg.freeze.phases or cfg.peft.method:  # optimizer state exists after a phase's first step
                state_bytes = state_bytes or phase_switch.optimizer_state_bytes(engine)
                record.update(phase=phase, trainable_params=start.trainable,
                              optimizer_state_bytes=state_bytes, lr_new_params=lr_new)
            record["mfu"] = fpt * record["tokens_per_s"] / peak if peak else None
            if len(data.sources) > 1:
                record.update({f"tokens/{k}": v for k, v in stream.tokens_by_source(step).items()})
            if val is not None and (step % t.val_every == 0 or step == t.max_steps):
                with faults.kill_in_val(engine.module, step, dist.rank):
                    record["val_loss"] = validate(engine, val, cfg, dist)
            metrics.write(record)
            tracker.log_step(record)
            progress.update(record, log=(t.log_every and step % t.log_every == 0) or "val_loss" in record)
            faults.maybe_kill("kill_after_step", step, dist.rank)
            if bad_in_a_row >= t.max_bad_steps:
                raise PipelineError(
                    f"{bad_in_a_row} consecutive steps had a non-finite loss or gradients (last: step "
                    f"{step}, train.max_bad_steps={t.max_bad_steps}); stopping. The last good checkpoint "
                    f"under {ckpt_dir} is kept: lower train.lr or check the data, then re-run to resume")
            preempted = stop.agreed(dist.device)
            if (t.save_every and step % t.save_every == 0) or step == t.max_steps or preempted:
                tag = checkpointing.save(engine, ckpt_dir, step,
                                         {"step": step, "tokens": tokens_seen, "skipped_steps": skipped,
                                          "phase": phase},
                                         {"stream": (loader or stream).state_dict(),
                                          "rng": checkpointing.rng_state()},
                                         dist.rank, t.keep_last,
                                         {run_guard.TOKENIZER_KEY: data.tokenizer_sha256})
                tracker.log_event(json.dumps({"step": step, "path": str((ckpt_dir / tag).resolve())}),
                                  f"checkpoints/{tag}.json")
            if periodic.due(t, step) and not preempted:
                if dist.is_main:
                    periodic.evaluate_now(engine.module, str(data.path), t, step, run_dir, tracker,
                                          dist.device)
                torch.distributed.barrier()
            if preempted:
                if dist.is_main:
                    progress.write(f"stopped by signal {stop.signal or 'on another rank'} at step {step}; "
                                   f"checkpoint saved, re-run the same command to resume")
                status = run_status.KILLED
                break
        else:
            status = run_status.FINISHED
        close_loop(progress, stop, loader, stream)
        if dist.is_main and status == run_status.FINISHED:
            finish_run(cfg, run_dir, metrics.read(), tracker)
    except BaseException as err:
        status = run_status.status_after(err)
        close_loop(progress, stop, loader, stream)
        raise
    finally:
        tracker.finish(status)  # a no-op once finish_run has closed the run
        sigterm.restore()
    torch.distributed.barrier()


def close_loop(progress, stop, loader, stream) -> None:
    """Stop the progress bar, hand SIGTERM/SIGINT back, end the data threads (idempotent)."""
    if progress:
        progress.close()
    if stop:
        stop.restore()
    if loader:
        loader.close()
    stream.close()


def main(argv: list[str] | None = None) -> int:
    """Exit 2 on a bad config (common/cli.py), 1 on a PipelineError while training, 128 + the
    signal when stopped outside the steps; any other exception is a bug and keeps its traceback."""
    try:
        cfg, _ = parse_args(argv, __doc__.splitlines()[0])
        cfg, data = prepare(cfg)
    except user_error_types() as err:
        return exit_on("pipeline.train", err)
    try:
        train(cfg, data)
    except PipelineError as err:
        print(f"pipeline.train: {err}", file=sys.stderr)
        return 1
    except (run_status.Terminated, KeyboardInterrupt) as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"pipeline.train: stopped by signal {signum} outside the training steps; "
              "re-run the same command to resume", file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
