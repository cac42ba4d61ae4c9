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
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.cli import exit_on, user_error_types

from kernels import wkv_backend_default
from model import build_model

from . import runs
from .instruments import from_environment
from .training import freezing, phase_switch, run_guard
from .records import run_status
from .config import RunConfig, fit_to_world, parse_args, resolve_precision, to_yaml
from .data.sources import TrainingData, open_sources
from .distill import config as distill
from .data.val_windows import ValWindows, check_split, summed_loss
from .training.distributed import Dist, init_distributed
from .errors import PipelineError
from .training.metrics import MetricsLog
from .training.preemption import StopRequest
from .data.prefetch import Prefetcher
from .training.progress import Progress
from .records.run_info import finish_run, run_tags
from .training.startup import open_run
from .training.step_hooks import StepHooks
from .training.train_state import TrainState
from .training.train_step import StepContext, Trainee, train_step
from .records.tracking import Tracker
from .training.init_from import source_kind


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
    # once, here: before comparing with a saved run, and what train() and config.yaml record
    cfg = resolve_precision(cfg, torch.cuda.is_available())
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
    run_dir = runs.run_dir_of(cfg.train.out_dir, cfg.train.run_name)
    run_guard.check_same_run(cfg, run_dir)
    run_guard.check_tokenizer(cfg, run_dir, data.tokenizer_sha256)
    return cfg, data


def marker_fields(cfg: RunConfig, data: TrainingData, dist: Dist) -> dict:
    """What every checkpoint's COMPLETE marker says about itself (runs.Marker)."""
    return {"model": OmegaConf.to_container(OmegaConf.structured(cfg.model)),
            "zero_stage": cfg.train.zero_stage, "world_size": dist.world,
            "tokenizer_sha256": data.tokenizer_sha256}


def run_steps(cfg: RunConfig, trainee: Trainee, state: TrainState, ctx: StepContext,
              hooks: StepHooks, teacher) -> str:
    """The algorithm: switch the freeze phase where the schedule says, train a step, run the
    end-of-step hooks; until max_steps (FINISHED) or a signal (KILLED, after a checkpoint)."""
    while state.step < cfg.train.max_steps:
        if (phase := freezing.phase_at(cfg.freeze, state.step)) != state.phase:
            engine, trainable = phase_switch.switch(trainee.engine, cfg, phase, ctx.dist.world,
                                                    ctx.dist.device)
            trainee = Trainee(engine, trainable, distill.objective_for(cfg, phase, teacher))
            state.phase = phase
            announce_phase(phase, state.step, trainable, hooks.progress, hooks.tracker)
        record, applied = train_step(trainee, state, ctx)
        if hooks.after_step(record, applied, state, trainee):
            return run_status.KILLED
    return run_status.FINISHED


def train(cfg: RunConfig, data: TrainingData) -> None:
    """Train `cfg` (resolved by `prepare`) on `data`, resuming from the run's newest checkpoint."""
    with wkv_backend_default(cfg.train.wkv_backend):  # the run's choice, not the process's
        run_training(cfg, data, init_distributed())


def run_training(cfg: RunConfig, data: TrainingData, dist: Dist) -> None:
    t = cfg.train
    run_dir = runs.run_dir_of(t.out_dir, t.run_name)
    ckpt_dir = runs.checkpoints_of(run_dir)

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    stream = data.stream(cfg, dist.rank, dist.world)  # global batches: any number of ranks
    val = val_windows(data, cfg, dist) if t.val_every and t.val_batches else None
    instruments = stream.instruments = from_environment(dist.rank)  # none in a normal run
    start = open_run(cfg, dist, ckpt_dir, stream)
    state = start.state
    teacher = distill.load_teacher(cfg, dist.device)
    trainee = Trainee(start.engine, start.trainable, distill.objective_for(cfg, state.phase, teacher))
    if dist.is_main:  # only now: a run that cannot start leaves its old config in place
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / runs.RUN_CONFIG).write_text(to_yaml(cfg))
        if start.resumed_from:
            print(f"resumed from {start.resumed_from} at step {state.step}", flush=True)

    loader = Prefetcher(stream, t.micro_batch, t.prefetch) if t.prefetch else None
    next_batch = loader.next_batch if loader else lambda: stream.next_batch(t.micro_batch)
    metrics = MetricsLog(run_dir / runs.METRICS, enabled=dist.is_main)
    metrics.truncate_after(state.step)
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
        ctx = StepContext.of(cfg, dist, start.engine.module, stream, next_batch, len(data.sources),
                             instruments)
        progress = Progress(t.max_steps, state.step, enabled=dist.is_main)
        hooks = StepHooks(cfg, dist, run_dir, ckpt_dir, metrics, tracker, progress, stop,
                          (lambda engine: validate(engine, val, cfg, dist)) if val else None,
                          loader or stream, marker_fields(cfg, data, dist), str(data.path), instruments)
        status = run_steps(cfg, trainee, state, ctx, hooks, teacher)
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
