"""Train a GoldFinch (or Finch, or Llama) model with DeepSpeed ZeRO.

    python -m pipeline.train [--config configs/train/X.yaml] [key=value ...]

Runs as one plain process or under `deepspeed` / `torchrun`. Re-running the same command resumes
from the newest complete checkpoint (train.resume=auto).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf.errors import OmegaConfBaseException

from model import build_model

from . import checkpointing
from .config import RunConfig, fit_to_world, parse_args, to_yaml
from .data_loader import DataDir, TokenStream
from .distributed import Dist, all_mean, init_distributed
from .engine import build_engine
from .flops import flops_per_token, peak_flops
from .metrics import MetricsLog
from .optim import lr_at
from .prefetch import Prefetcher
from .progress import Progress


def lm_loss(engine, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over a [B, ctx+1] window batch (fused when train.fused_ce)."""
    loss, _ = engine(batch[:, :-1], targets=batch[:, 1:])
    return loss


@torch.no_grad()
def validate(engine, val: TokenStream, cfg: RunConfig, dist: Dist) -> float:
    """Mean loss over the same first val_batches of the val split every time, so values compare."""
    engine.eval()
    val.reset()
    losses = [lm_loss(engine, val.next_batch(cfg.train.micro_batch).to(dist.device)).item()
              for _ in range(cfg.train.val_batches)]
    engine.train()
    return all_mean(sum(losses) / len(losses), dist.device)


def set_lr(engine, cfg: RunConfig, step: int) -> float:
    t = cfg.train
    lr = lr_at(step, t.lr, t.lr_final, t.warmup_steps, t.max_steps, t.lr_schedule)
    for group in engine.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def resume_point(resume: str, ckpt_dir: Path) -> tuple[Path, str] | None:
    """(checkpoint dir, tag) to resume from: none, the newest complete one, or a given path."""
    if resume == "never":
        return None
    if resume == "auto":
        tag = checkpointing.find_resume_tag(ckpt_dir)
        return None if tag is None else (ckpt_dir, tag)
    path = Path(resume)
    if not (path / checkpointing.COMPLETE).is_file():
        raise FileNotFoundError(f"train.resume={resume}: not a complete checkpoint directory")
    return path.parent, path.name


def prepare(cfg: RunConfig) -> tuple[RunConfig, DataDir]:
    """Open the data dir and fit the model config to it; every error here names what is wrong
    before any process group or engine is started."""
    data = DataDir.open(cfg.data.path)
    if cfg.model.vocab_size is None:
        cfg = replace(cfg, model=replace(cfg.model, vocab_size=data.vocab_size))
    world = int(os.environ.get("WORLD_SIZE", 1))
    cfg = fit_to_world(cfg, world)
    data.check_model(cfg.model.vocab_size, cfg.model.ctx_len, world)
    return cfg, data


def train(cfg: RunConfig, data: DataDir) -> list[dict]:
    dist = init_distributed()
    t = cfg.train
    run_dir = Path(t.out_dir) / t.run_name
    ckpt_dir = run_dir / "checkpoints"
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = build_model(cfg.model)
    model.grad_ckpt, model.fused_ce = t.grad_ckpt, t.fused_ce
    engine = build_engine(model, t, dist.world)
    stream = data.stream("train", dist.rank, dist.world, cfg.model.ctx_len, t.seed, t.shuffle)
    val = data.stream("val", dist.rank, dist.world, cfg.model.ctx_len, t.seed, False)

    step, tokens_seen = 0, 0
    where = resume_point(t.resume, ckpt_dir)
    if where is not None:
        client, rank_state = checkpointing.load(engine, *where, dist.rank)
        step, tokens_seen = client["step"], client["tokens"]
        stream.load_state_dict(rank_state["stream"])
        checkpointing.set_rng_state(rank_state["rng"])
        if dist.is_main:
            print(f"resumed from {where[0] / where[1]} at step {step}", flush=True)

    loader = Prefetcher(stream, t.micro_batch, t.prefetch) if t.prefetch else None
    next_batch = loader.next_batch if loader else lambda: stream.next_batch(t.micro_batch)
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=dist.is_main)
    metrics.truncate_after(step)
    fpt = flops_per_token(model, cfg.model)
    peak = peak_flops(dist.device, t.peak_tflops)
    tokens_per_step = t.micro_batch * t.grad_accum * dist.world * cfg.model.ctx_len
    progress = Progress(t.max_steps, step, enabled=dist.is_main)
    records = []
    while step < t.max_steps:
        t0 = time.perf_counter()
        lr = set_lr(engine, cfg, step)
        loss_sum = 0.0
        for _ in range(t.grad_accum):
            loss = lm_loss(engine, next_batch().to(dist.device, non_blocking=True))
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
        step += 1
        tokens_seen += tokens_per_step
        seconds = time.perf_counter() - t0
        record = {"step": step, "loss": all_mean(loss_sum / t.grad_accum, dist.device), "lr": lr,
                  "tokens": tokens_seen, "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                  "tokens_per_s": tokens_per_step / seconds}
        record["mfu"] = fpt * record["tokens_per_s"] / peak if peak else None
        if t.val_every and (step % t.val_every == 0 or step == t.max_steps):
            record["val_loss"] = validate(engine, val, cfg, dist)
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"loss is {record['loss']} at step {step}")
        metrics.write(record)
        records.append(record)
        progress.update(record, log=(t.log_every and step % t.log_every == 0) or "val_loss" in record)
        if (t.save_every and step % t.save_every == 0) or step == t.max_steps:
            checkpointing.save(engine, ckpt_dir, step, {"step": step, "tokens": tokens_seen},
                               {"stream": (loader or stream).state_dict(),
                                "rng": checkpointing.rng_state()},
                               dist.rank, t.keep_last)
    progress.close()
    if loader:
        loader.close()
    return records


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, _ = parse_args(argv, __doc__.splitlines()[0])
        cfg, data = prepare(cfg)
    except (ValueError, FileNotFoundError, OmegaConfBaseException) as err:
        print(f"pipeline.train: {err}", file=sys.stderr)
        return 2
    train(cfg, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
