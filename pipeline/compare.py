"""Train GoldFinch, Finch and Llama on the same data, tokens, seed and schedule; report the results.

    python -m pipeline.compare [--config configs/compare/default.yaml] [key=value ...]
    COMPARE_STEPS=2000 python -m pipeline.compare micro_batch=32 ctx_len=512   # on a GPU

Each arch is trained by `python -m pipeline.train` as its own process, from its preset
(configs/model/<arch>-tiny.yaml by default), into one MLflow experiment. Parameter counts are
checked first: archs further apart than `param_tolerance` stop the comparison before any training.
Afterwards each trained model is evaluated on the same val windows and pre-filled with
`cache_context` tokens to measure its cache; the table goes to `results` (docs/RESULTS.md), the
val-loss curves to `plot` (docs/img/compare.png) and all numbers to `<out_dir>/<run_prefix>-results.json`.
Step count: `steps=` on the command line, else the COMPARE_STEPS environment variable, else the YAML.
With `seeds=N` every arch trains N times (seeds seed, seed+1, ...; runs `<prefix>-<arch>-s<seed>`)
and the report gives each arch's mean and spread, and says which gaps exceed the spread.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import median

import torch

from common.cli import command
from common.config_loader import load_config as load_layers
from common.errors import UserError

from model import build_model

from . import runs
from .config import load_run_config
from .data.data_loader import DataDir
from .data.val_windows import ValWindows
from .errors import PipelineError
from .evaluate import evaluate, log_to_mlflow
from .inference.run_loading import load_from_run, prefill_cache_bytes

MANIFEST_KEYS = ("splits", "totals", "input", "tokenizer")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compare" / "default.yaml"


@dataclass
class CompareConfig:
    archs: list[str] = field(default_factory=lambda: ["goldfinch", "finch", "llama", "rwkv7",
                                                      "goldfinch7"])
    preset: str = "configs/model/{arch}-tiny.yaml"  # each arch's model preset ({arch} is filled in)
    data: str = "data/default"
    steps: int = 100
    micro_batch: int = 8
    ctx_len: int = 256
    seed: int = 1337
    seeds: int = 1  # runs per arch, with seeds seed, seed+1, ...: the report gives mean and spread
    val_every: int = 0  # 0: about ten validations over the run
    val_batches: int = 4  # the trainer's validation (the curve in the plot)
    eval_batches: int = 16  # the final val loss in the table (pipeline.evaluate)
    train_overrides: list[str] = field(default_factory=list)  # passed to every run, last
    nproc: int = 1  # processes per run (torchrun) when > 1
    run_prefix: str = "compare"
    out_dir: str = "runs"
    experiment: str = "compare"
    tracking_dir: str = "mlruns"
    tracking: bool = True
    fresh: bool = True  # delete runs/<prefix>-<arch> first; false: resume them instead
    param_tolerance: float = 0.10
    cache_context: int = 4096
    results: str = "docs/RESULTS.md"
    plot: str = "docs/img/compare.png"
    machine: str = ""  # described in RESULTS.md; empty: detected
    date: str = ""  # empty: today


def load_config(config: str | Path | None, overrides: list[str]) -> CompareConfig:
    """Schema <- YAML <- COMPARE_STEPS <- overrides; unknown keys fail naming the key."""
    path = Path(config) if config else DEFAULT_CONFIG
    files = [path] if config or path.is_file() else []
    env = []
    if os.environ.get("COMPARE_STEPS"):
        try:
            env.append({"steps": int(os.environ["COMPARE_STEPS"])})
        except ValueError:
            raise UserError(f"COMPARE_STEPS={os.environ['COMPARE_STEPS']!r}: must be an integer")
    cfg: CompareConfig = load_layers(CompareConfig, files, overrides, env, example="steps=50")
    for key in ("steps", "micro_batch", "ctx_len", "val_batches", "eval_batches", "nproc",
                "cache_context", "seeds"):
        if getattr(cfg, key) <= 0:
            raise UserError(f"{key}={getattr(cfg, key)}: must be a positive integer")
    if not cfg.archs or len(set(cfg.archs)) != len(cfg.archs):
        raise UserError(f"archs={cfg.archs}: must list distinct architectures")
    return cfg


def seed_list(cfg: CompareConfig) -> list[int]:
    return [cfg.seed + i for i in range(cfg.seeds)]


def run_name(cfg: CompareConfig, arch: str, seed: int | None = None) -> str:
    """`<prefix>-<arch>`, with `-s<seed>` when the comparison runs several seeds."""
    return f"{cfg.run_prefix}-{arch}" + (f"-s{seed}" if cfg.seeds > 1 else "")


def train_args(cfg: CompareConfig, arch: str, seed: int | None = None) -> list[str]:
    """The trainer's command line for one arch: everything but the arch is the same for all."""
    val_every = cfg.val_every or max(1, cfg.steps // 10)
    seed = cfg.seed if seed is None else seed
    return ["--config", cfg.preset.format(arch=arch),
            f"data.path={cfg.data}", f"train.run_name={run_name(cfg, arch, seed)}",
            f"train.out_dir={cfg.out_dir}", f"train.max_steps={cfg.steps}",
            f"train.micro_batch={cfg.micro_batch}", f"model.ctx_len={cfg.ctx_len}",
            f"train.seed={seed}", f"train.val_every={val_every}",
            f"train.val_batches={cfg.val_batches}", f"train.save_every={cfg.steps}",
            f"train.resume={'never' if cfg.fresh else 'auto'}", "train.export=true",
            f"tracking.enabled={str(cfg.tracking).lower()}", f"tracking.experiment={cfg.experiment}",
            f"tracking.dir={cfg.tracking_dir}", *cfg.train_overrides]


def count_params(cfg: CompareConfig) -> dict[str, int]:
    """Each arch's parameter count as the trainer will build it (on `meta`: no memory, no init)."""
    vocab = DataDir.open(cfg.data).vocab_size
    counts = {}
    for arch in cfg.archs:
        run_cfg = load_run_config(cfg.preset.format(arch=arch), train_args(cfg, arch)[2:])
        if run_cfg.model.variant != arch:
            raise UserError(f"preset {cfg.preset.format(arch=arch)} builds "
                            f"{run_cfg.model.variant!r}, not {arch!r}")
        model_cfg = run_cfg.model if run_cfg.model.vocab_size else replace(run_cfg.model, vocab_size=vocab)
        counts[arch] = build_model(model_cfg, device="meta").num_params()
    return counts


def check_params(counts: dict[str, int], tolerance: float) -> float:
    """(largest / smallest) - 1; raises PipelineError when it exceeds the tolerance."""
    spread = max(counts.values()) / min(counts.values()) - 1.0
    listing = ", ".join(f"{arch} {n:,}" for arch, n in counts.items())
    print(f"pipeline.compare: parameters: {listing} (spread {spread:.1%}, limit {tolerance:.0%})",
          flush=True)
    if spread > tolerance:
        raise PipelineError(f"parameter counts are not matched within {tolerance:.0%}: {listing} "
                            f"(largest/smallest - 1 = {spread:.1%}); adjust the presets or "
                            f"train_overrides so the models are the same size")
    return spread


def train_one(cfg: CompareConfig, arch: str, seed: int) -> float:
    """Run the trainer as a subprocess (its output passes through); returns its wall time."""
    run_dir = Path(cfg.out_dir) / run_name(cfg, arch, seed)
    if cfg.fresh and run_dir.exists():
        print(f"pipeline.compare: removing the previous {run_dir} (fresh=true)", flush=True)
        shutil.rmtree(run_dir)
    launcher = [sys.executable, "-m", "pipeline.train"]
    if cfg.nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={cfg.nproc}", "-m", "pipeline.train"]
    args = train_args(cfg, arch, seed)
    print(f"pipeline.compare: training {arch} (seed {seed}): {' '.join(launcher[1:] + args)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(launcher + args)
    if proc.returncode:
        raise PipelineError(f"training {arch} failed (exit {proc.returncode}); its run dir is "
                            f"{run_dir}. Re-run with fresh=false to resume the runs where they stopped")
    return time.perf_counter() - t0


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / runs.METRICS
    if not path.is_file():
        raise PipelineError(f"{path} is missing: did the run finish?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(cfg: CompareConfig, arch: str, seed: int, wall_s: float, data: DataDir) -> dict:
    """One run's numbers: from its metrics, a fresh evaluation and a cache measurement."""
    run_dir = Path(cfg.out_dir) / run_name(cfg, arch, seed)
    records = read_metrics(run_dir)
    loaded = load_from_run(run_dir)
    tail = records[-max(1, len(records) // 10):]
    timed = records[1:] if len(records) > 1 else records  # step 1 pays for warm-up
    speeds = [r["tokens_per_s"] for r in timed if r.get("tokens_per_s")]
    result = evaluate(loaded, Path(cfg.data), batches=cfg.eval_batches)
    if cfg.tracking:
        log_to_mlflow(loaded, result)
    model = loaded.model
    model.cache_dtype = torch.bfloat16  # what the cache is reported in, whatever the run chose
    first = ValWindows(data, cfg.cache_context, 1).tokens(range(1))  # the first val window
    cache = prefill_cache_bytes(model, torch.from_numpy(first)[:, :cfg.cache_context])
    return {
        "arch": arch, "seed": seed, "run": run_name(cfg, arch, seed), "params": model.num_params(),
        "step": loaded.step, "tokens": records[-1]["tokens"],
        "final_train_loss": sum(r["loss"] for r in tail) / len(tail), "train_loss_steps": len(tail),
        "val_loss": result["loss"], "val_perplexity": result["perplexity"],
        "val_tokens": result["tokens"], "trainer_val_loss": records[-1].get("val_loss"),
        "tokens_per_s": median(speeds) if speeds else None, "wall_s": wall_s,
        "cache_context": cfg.cache_context,
        "cache_bytes_per_token": cache["cache_bytes_per_token"],
        "fixed_state_bytes": cache["fixed_state_bytes"],
        "curve": [(r["tokens"], r["val_loss"]) for r in records if r.get("val_loss") is not None],
    }


def run_settings(cfg: CompareConfig) -> dict:
    """The schedule and shape the runs actually used (from the first run's config.yaml)."""
    run_cfg = runs.read_run_config(Path(cfg.out_dir) / run_name(cfg, cfg.archs[0], cfg.seed))
    t, m = run_cfg.train, run_cfg.model
    return {"lr": t.lr, "lr_final": t.lr_final, "lr_schedule": t.lr_schedule,
            "warmup_steps": t.warmup_steps, "precision": t.precision, "zero_stage": t.zero_stage,
            "vocab_size": m.vocab_size,
            "shape": f" ({m.n_layer} layers x {m.n_embd}, head size {m.head_size}, context {m.ctx_len})"}


@command("pipeline.compare")
def main(argv: list[str] | None = None) -> int:
    from .eval.compare_report import aggregate, describe_machine, write_plot, write_results

    parser = argparse.ArgumentParser(prog="python -m pipeline.compare",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML (default: configs/compare/default.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. steps=50 archs=[goldfinch,llama]")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    data = DataDir.open(cfg.data)
    spread = check_params(count_params(cfg), cfg.param_tolerance)
    runs = [(arch, seed) for seed in seed_list(cfg) for arch in cfg.archs]
    walls = {run: train_one(cfg, *run) for run in runs}
    per_seed = [summarize(cfg, arch, seed, walls[arch, seed], data) for arch, seed in runs]
    rows = aggregate(per_seed, cfg.archs)
    cfg = replace(cfg, date=cfg.date or datetime.date.today().isoformat(),
                  machine=cfg.machine or describe_machine())
    summary = {"config": asdict(cfg), "param_spread": spread, "rows": rows, "runs": per_seed,
               "command": {"config": args.config, "overrides": args.overrides,
                           "steps_env": os.environ.get("COMPARE_STEPS") or None},
               "train": run_settings(cfg),
               "wall_s": time.perf_counter() - started,
               "data": {k: data.manifest[k] for k in MANIFEST_KEYS if k in data.manifest}}
    out = Path(cfg.out_dir) / f"{cfg.run_prefix}-results.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    write_plot(rows, Path(cfg.plot))
    write_results(summary, Path(cfg.results), Path(cfg.plot))
    print(f"pipeline.compare: wrote {cfg.results}, {cfg.plot} and {out} "
          f"({summary['wall_s'] / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
