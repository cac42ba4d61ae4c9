"""Validation loss and perplexity of a trained model over a data dir's val shards.

    python -m pipeline.evaluate --run runs/<name> [--step N] [--data DIR] [--batches N] [--log-mlflow]
    python -m pipeline.evaluate --model DIR --data DIR [--batches N]
    ... --teacher TEACHER_DIR: also the teacher's loss and KL(teacher || model) on the same windows

Scores the windows the trainer's validation scores: the first --batches x the run's global batch
windows of the val split in its fixed, unshuffled order (pipeline/data/val_windows.py), in
micro-batches of train.micro_batch, as one mean over all their tokens. With the default --batches
(train.val_batches) it reproduces the run's own val_loss, whatever number of ranks trained it;
more batches give a steadier estimate. Deterministic: nothing is sampled. Prints one JSON object
on stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.cli import command
from common.errors import UserError

from .data.data_loader import DataDir
from .data.val_windows import ValWindows, summed_loss
from .inference.run_loading import LoadedModel, add_source_args, check_vocab, load, run_data_path
from .records.tracking import TrackingConfig, store_uris
from . import runs

DEFAULT_BATCH, DEFAULT_BATCHES = 8, 8


@dataclass
class EvalPlan:
    """Which windows to score, and in what pieces: the numbers the trainer's validate() uses."""
    batches: int
    global_batch: int
    micro_batch: int
    ctx_len: int

    @property
    def windows(self) -> int:
        return self.batches * self.global_batch


def run_global_batch(loaded: LoadedModel) -> int | None:
    """Windows per optimizer step of the run: train.global_batch, else micro-batch x accumulation
    x the ranks that wrote the checkpoint (the run's newest one for its export)."""
    if loaded.run_cfg is None:
        return None
    train = loaded.run_cfg.train
    if train.get("global_batch"):
        return int(train.global_batch)
    tag_dir = loaded.source if loaded.step is not None else None
    if tag_dir is None and loaded.run_dir is not None:
        ckpt_dir = runs.checkpoints_of(loaded.run_dir)
        tag = runs.find_resume_tag(ckpt_dir)
        tag_dir = ckpt_dir / tag if tag else None
    ranks = runs.saved_world(tag_dir) if tag_dir else 1
    return int(train.micro_batch) * int(train.grad_accum) * max(1, ranks)


def plan_for(loaded: LoadedModel, batches: int | None, micro_batch: int | None) -> EvalPlan:
    """The run's own validation settings, overridable; defaults when there is no run config (a
    batch is then one micro-batch, as for one rank without accumulation)."""
    check_counts(batches, micro_batch)
    train = loaded.run_cfg.train if loaded.run_cfg is not None else None
    if batches is None:
        batches = int(train.val_batches) if train and train.val_batches else DEFAULT_BATCHES
    if micro_batch is None:
        micro_batch = int(train.micro_batch) if train else DEFAULT_BATCH
    return EvalPlan(batches, run_global_batch(loaded) or micro_batch, micro_batch, loaded.cfg.ctx_len)


def check_counts(batches: int | None, micro_batch: int | None) -> None:
    for name, value in (("--batches", batches), ("--micro-batch", micro_batch)):
        if value is not None and value <= 0:
            raise UserError(f"{name}={value}: must be a positive integer")


@torch.no_grad()
def val_loss(model, data: DataDir, plan: EvalPlan) -> float:
    """Mean next-token loss over every target token of the plan's windows, in the model's
    training loss path (one rank's sums, as the trainer adds its ranks' up)."""
    model.eval()
    val = ValWindows(data, plan.ctx_len, plan.windows)
    sums = summed_loss(lambda batch: model(batch[:, :-1], targets=batch[:, 1:])[0], val,
                       plan.micro_batch, torch.device("cpu"))
    return (sums[0] / sums[1]).item()


def evaluate(loaded: LoadedModel, data_path: Path, batches: int | None = None,
             micro_batch: int | None = None, teacher: Path | None = None) -> dict:
    data = DataDir.open(data_path)
    check_vocab(loaded.cfg.vocab_size, data.vocab_size, data_path)
    plan = plan_for(loaded, batches, micro_batch)
    loss = val_loss(loaded.model, data, plan)
    extra = against_teacher(loaded, data, plan, teacher) if teacher else {}
    return {"loss": loss, **extra, "perplexity": math.exp(min(loss, 700.0)),
            "tokens": plan.windows * plan.ctx_len, "batches": plan.batches, "windows": plan.windows,
            "global_batch": plan.global_batch, "micro_batch": plan.micro_batch,
            "ctx_len": plan.ctx_len, "step": loaded.step, "data": str(data_path),
            "source": str(loaded.source)}


def against_teacher(loaded: LoadedModel, data: DataDir, plan: EvalPlan, path: Path) -> dict:
    """The teacher's loss and KL(teacher || model) over the plan's windows (distillation)."""
    from .distill.measure import compare_with_teacher
    from .distill.teacher import Teacher, describe

    info = describe(path)
    if info.vocab_size < loaded.cfg.vocab_size:
        raise UserError(f"--teacher {path}: its vocabulary ({info.vocab_size}) is smaller than the "
                        f"model's ({loaded.cfg.vocab_size})")
    teacher = Teacher(info, torch.device("cpu"), torch.float32)
    val = ValWindows(data, plan.ctx_len, plan.windows)
    return compare_with_teacher(loaded.model, teacher, val, plan.micro_batch)


def log_to_mlflow(loaded: LoadedModel, result: dict) -> str:
    """Log eval_loss / eval_perplexity at the checkpoint's step into the run's own MLflow run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from omegaconf import OmegaConf

    from .records.tracking import RUN_ID_FILE

    if loaded.run_dir is None or loaded.run_cfg is None:
        raise UserError("--log-mlflow needs --run (an exported model alone has no MLflow run)")
    id_file = loaded.run_dir / RUN_ID_FILE
    if not id_file.is_file():
        raise FileNotFoundError(f"{id_file} is missing: the run was not tracked in MLflow")
    tracking = TrackingConfig(**OmegaConf.to_container(loaded.run_cfg.tracking))
    run_id = id_file.read_text().strip()
    client = MlflowClient(tracking_uri=store_uris(tracking)[0])
    step, now = result["step"] or 0, int(time.time() * 1000)
    metrics = [Metric(f"eval_{key}", float(result[key]), now, step)
               for key in ("loss", "perplexity", "tokens")]
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, "eval_data", result["data"])
    return run_id


@command("pipeline.evaluate")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate",
                                     description=__doc__.splitlines()[0])
    add_source_args(parser)
    parser.add_argument("--data", type=Path, help="data dir (default: the run's data.path)")
    parser.add_argument("--batches", type=int,
                        help="global batches of val windows to score (default: train.val_batches)")
    parser.add_argument("--micro-batch", type=int,
                        help="windows per forward pass (default: train.micro_batch)")
    parser.add_argument("--log-mlflow", action="store_true", help="log to the run's MLflow run")
    parser.add_argument("--teacher", type=Path, help="a distillation teacher (Hugging Face dir or "
                        "export dir): also report its loss and KL(teacher || model)")
    args = parser.parse_args(argv)
    check_counts(args.batches, args.micro_batch)
    loaded = load(args.run, args.model, args.step)
    data_path = args.data or run_data_path(loaded)
    if data_path is None:
        raise UserError(f"{args.model} has no run config naming its data: pass --data DIR")
    result = evaluate(loaded, data_path, args.batches, args.micro_batch, args.teacher)
    if args.log_mlflow:
        result["mlflow_run_id"] = log_to_mlflow(loaded, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
