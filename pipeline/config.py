"""The run config: model, data and train sections, merged from YAML and dotlist overrides and
validated before any work starts."""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from common.config_loader import load_config
from common.errors import ConfigError, UserError

from model import ModelConfig

from .distill.config import DistillConfig, student_model_keys
from .training.freezing import FreezeConfig
from .training.peft import PeftConfig
from .training import peft
from .training.schedule import SCHEDULES
from .records.tracking import TrackingConfig

PRECISIONS = ("auto", "fp32", "bf16")
WKV_BACKENDS = ("auto", "torch", "naive", "triton")


@dataclass
class MixSource:
    path: str = ""  # a data dir (local path or fsspec URL)
    weight: float = 1.0  # relative: the shares are weight / sum of weights


DEFAULT_DATA_PATH = "data/default"


@dataclass
class TrainDataConfig:
    """What training reads of its data: the data-prep build keys (vocab_size, tokenizer, ...) are
    `python -m data_prep`'s and recorded in the data dir's manifest, so here they fail by name."""
    path: str = DEFAULT_DATA_PATH  # a data dir built by `python -m data_prep` (path or fsspec URL)
    # hash each shard against the manifest the first time a process reads it (sizes are always
    # checked when the data dir is opened); costs about one extra read of each shard per process
    verify_shards: bool = True
    mix: list[MixSource] = field(default_factory=list)  # instead of path: a weighted mixture
    shuffle_shards: int = 4  # shards whose windows are shuffled together (the shuffle buffer)
    read_ahead: int = 2  # optimizer steps whose shards are read ahead on a background thread
    retries: int = 3  # retries of a failed read from object storage


@dataclass
class TrainConfig:
    run_name: str = "goldfinch-tiny"
    out_dir: str = "runs"
    max_steps: int = 200
    micro_batch: int = 8
    grad_accum: int = 1
    global_batch: int = 0  # windows per optimizer step over all ranks; set: grad_accum is derived
    lr: float = 6e-4
    lr_final: float = 2e-4
    lr_schedule: str = "cos_quarter"  # cos_quarter | cosine | linear | exp (training/schedule.py)
    warmup_steps: int = 10  # lr x (0.2 + 0.8 step/warmup_steps) over the first steps
    total_tokens: Optional[int] = None  # the decay's length in tokens; unset: max_steps' worth
    max_tokens: Optional[int] = None  # set: the run's length in tokens (max_steps is derived)
    budget_scale: float = 1.0  # multiplies every token budget: max_tokens, total_tokens, until_tokens
    weight_decay: float = 0.001  # the reference's, on plain matrices only (see training/optim.py)
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0
    l2wrap: float = 1e-4  # the reference's L2Wrap logit penalty (training/loss.py); 0 = off
    seed: int = 1337
    shuffle: bool = True
    save_every: int = 100
    keep_last: int = 3
    val_every: int = 50
    val_batches: int = 8
    log_every: int = 10
    zero_stage: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere (resolved before the run starts)
    grad_ckpt: bool = False
    fused_ce: bool = False
    wkv_backend: Optional[str] = None  # auto | torch | naive | triton; unset: GOLDFINCH_WKV_BACKEND
    resume: str = "auto"  # auto | never | path to a checkpoint dir
    init_from: Optional[str] = None  # run dir, checkpoint, export dir or .safetensors (new runs)
    # also load blocks of another kind (a Finch block's channel mix and norms into a GOLD block)
    init_from_cross_kind: bool = False
    # resuming or init_from with weights trained under another tokenizer is refused unless set
    allow_other_tokenizer: bool = False
    peak_tflops: float = 0.0  # for MFU; 0 = look the device up (unknown on CPU)
    prefetch: int = 4  # batches read ahead on a background thread (0 = read inline)
    max_bad_steps: int = 5  # consecutive skipped (non-finite) steps before training stops
    export: bool = True  # write export/model.safetensors at the end (and log it to MLflow)
    # lm-eval tasks every eval_every steps and at the last step (0 = never); see pipeline/eval/
    eval_every: int = 0
    eval_tasks: list[str] = field(default_factory=list)
    eval_include_path: Optional[str] = None  # a directory of local lm-eval task YAML
    eval_limit: Optional[float] = None  # documents per task (a fraction below 1)


def _tiny_model() -> ModelConfig:
    return ModelConfig(arch="goldfinch", n_layer=6, n_embd=256, head_size=64, ctx_len=256)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=_tiny_model)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def _check_data(d: TrainDataConfig) -> None:
    for key in ("shuffle_shards", "read_ahead", "retries"):
        if getattr(d, key) < (1 if key == "shuffle_shards" else 0):
            raise UserError(f"data.{key}={getattr(d, key)!r}: must be >= "
                            f"{1 if key == 'shuffle_shards' else 0}")
    if d.mix and d.path != DEFAULT_DATA_PATH:
        raise UserError(f"data.path={d.path!r} and data.mix are both set: name the data dirs of a "
                        "mixture in data.mix only")
    for i, source in enumerate(d.mix):
        if not source.path:
            raise UserError(f"data.mix[{i}].path: empty; every source names a data dir")
        if not source.weight > 0:
            raise UserError(f"data.mix[{i}].weight={source.weight!r}: must be > 0")


def _check(cfg: RunConfig) -> None:
    t = cfg.train

    def bad(key: str, why: str) -> UserError:
        return UserError(f"train.{key}={getattr(t, key)!r}: {why}")

    if t.zero_stage not in (0, 1, 2, 3):
        raise bad("zero_stage", "must be 0, 1, 2 or 3")
    if t.precision not in PRECISIONS:
        raise bad("precision", f"expected one of {', '.join(PRECISIONS)}")
    if t.wkv_backend is not None and t.wkv_backend not in WKV_BACKENDS:
        raise bad("wkv_backend", f"expected one of {', '.join(WKV_BACKENDS)} (or unset)")
    if t.lr_schedule not in SCHEDULES:
        raise bad("lr_schedule", f"expected one of {', '.join(SCHEDULES)}")
    if t.lr_schedule == "exp" and not (t.lr > 0 and t.lr_final > 0):
        raise bad("lr_schedule", "exp decays geometrically: train.lr and train.lr_final must be > 0")
    for key in ("total_tokens", "max_tokens"):
        if getattr(t, key) is not None and getattr(t, key) <= 0:
            raise bad(key, "must be a positive number of tokens (or unset)")
    if not t.budget_scale > 0:
        raise bad("budget_scale", "must be > 0")
    if not t.l2wrap >= 0:
        raise bad("l2wrap", "must be >= 0 (0 turns the logit penalty off)")
    for key in ("max_steps", "micro_batch", "grad_accum"):
        if getattr(t, key) <= 0:
            raise bad(key, "must be a positive integer")
    for key in ("save_every", "val_every", "val_batches", "log_every", "keep_last", "warmup_steps",
                "global_batch", "prefetch", "max_bad_steps", "eval_every"):
        if getattr(t, key) < 0:
            raise bad(key, "must be >= 0")
    if t.offload_params and t.zero_stage != 3:
        raise bad("offload_params", "parameter offload needs train.zero_stage=3")
    if t.offload_optimizer and t.zero_stage == 0:
        raise bad("offload_optimizer", "optimizer offload needs train.zero_stage >= 1")
    if t.eval_every and not t.eval_tasks:
        raise bad("eval_every", "needs train.eval_tasks (lm-eval task names)")
    if t.eval_every and t.zero_stage == 3:
        raise bad("eval_every", "rank 0 evaluates its own copy of the weights, which ZeRO-3 "
                  "partitions: evaluate the checkpoints with python -m pipeline.lm_eval instead")
    if not t.run_name or "/" in t.run_name:
        raise bad("run_name", "must be a non-empty name without '/'")
    _check_data(cfg.data)
    cfg.model.validate()
    if cfg.peft.method is not None:
        from model import build_model
        sized = replace(cfg.model, vocab_size=cfg.model.vocab_size or 256)  # set from the data later
        peft.validate(cfg.peft, build_model(sized, device="meta"), cfg.freeze)


def resolve_precision(cfg: RunConfig, cuda: bool) -> RunConfig:
    """train.precision=auto becomes bf16 on a CUDA device and fp32 elsewhere, so config.yaml and
    the tracked params name the precision the run really used."""
    if cfg.train.precision != "auto":
        return cfg
    return replace(cfg, train=replace(cfg.train, precision="bf16" if cuda else "fp32"))


def fit_to_world(cfg: RunConfig, world: int) -> RunConfig:
    """Derive grad_accum from train.global_batch for this many ranks, or fail naming all three;
    then turn token budgets into steps (resolve_budgets)."""
    t = cfg.train
    if t.global_batch:
        per_pass = t.micro_batch * world
        if t.global_batch % per_pass:
            raise UserError(f"train.global_batch={t.global_batch} is not divisible by "
                            f"train.micro_batch={t.micro_batch} x {world} ranks = {per_pass}")
        cfg = replace(cfg, train=replace(t, grad_accum=t.global_batch // per_pass))
    return resolve_budgets(cfg, world)


def resolve_budgets(cfg: RunConfig, world: int) -> RunConfig:
    """Budgets given in tokens (train.max_tokens, a phase's until_tokens, train.total_tokens),
    times train.budget_scale, become steps of this run's global batch (rounded up), so a recipe
    keeps its token budgets whatever the batch and the number of ranks."""
    t = cfg.train
    per_step = t.micro_batch * t.grad_accum * world * cfg.model.ctx_len

    def steps(tokens: int) -> int:
        return max(1, math.ceil(tokens * t.budget_scale / per_step))

    phases = []
    for i, phase in enumerate(cfg.freeze.phases):
        if phase.until_tokens is not None:
            if phase.until_step is not None or phase.until_tokens <= 0:
                raise UserError(f"freeze.phases[{i}].until_tokens={phase.until_tokens}: must be a "
                                "positive number of tokens, and until_step unset")
            phase = replace(phase, until_step=steps(phase.until_tokens))
        phases.append(phase)
    t = replace(t, max_steps=steps(t.max_tokens) if t.max_tokens else t.max_steps,
                total_tokens=round(t.total_tokens * t.budget_scale) if t.total_tokens else None,
                max_tokens=None, budget_scale=1.0)
    phases = [replace(p, until_tokens=None) for p in phases]
    return replace(cfg, train=t, freeze=replace(cfg.freeze, phases=phases))


PHASE_KEYS = re.compile(r"\b(until_step|until_tokens|train|lr_scale|lr_final|lr|warmup_steps|loss|ce|kl|align):(?! )")


def _spaced_phases(override: str) -> str:
    """`freeze.phases=[{until_step:8,train:[gold]},{train:[all]}]` as typed on a command line is
    not YAML (a mapping needs `key: value`); space the known keys so it parses, and leave
    selectors such as `layers:0-3` alone."""
    if not override.startswith("freeze.phases="):
        return override
    return PHASE_KEYS.sub(r"\1: ", override)


def _data_prep_hint(message: str) -> str:
    """A data-prep key given to the trainer: say where it belongs."""
    from data_prep.config import DataConfig

    for f in fields(DataConfig):
        if f"(data.{f.name})" in message:
            return (f"; data.{f.name} is how python -m data_prep builds a data dir, and training "
                    "reads the built dir's manifest.json")
    return ""


def load_run_config(config: str | Path | list | None = None,
                    overrides: list[str] | None = None) -> RunConfig:
    """Schema <- YAML file(s), later ones over earlier ones (a recipe, then the model section a
    converter wrote) <- overrides; unknown keys and wrong types fail here, naming the key."""
    files = [config] if isinstance(config, (str, Path)) else config or []
    dotlist = [_spaced_phases(o) for o in overrides or []]
    try:
        cfg: RunConfig = load_config(RunConfig, files, dotlist, example="train.max_steps=50")
        student = student_model_keys(cfg.train.init_from)
        if student is not None:  # the student's model keys under everything the user set
            cfg = load_config(RunConfig, files, dotlist, example="train.max_steps=50",
                              base=[{"model": student}])
    except ConfigError as err:
        raise ConfigError(f"{err}{_data_prep_hint(str(err))}") from None
    _check(cfg)
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def parse_args(argv: list[str] | None, description: str) -> tuple[RunConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", action="append",
                        help="YAML run config (configs/train/...); repeat it to layer several")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train.max_steps=50")
    # the deepspeed launcher passes this; the rank is read from LOCAL_RANK, which it also sets
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(argv)
    return load_run_config(args.config, args.overrides), args
