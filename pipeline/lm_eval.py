"""Downstream evaluation of a trained model with lm-evaluation-harness.

    python -m pipeline.lm_eval --run runs/<name> [--step N] --tasks lambada_openai,piqa
        [--include-path DIR] [--limit N] [--batch-size N] [--num-fewshot K] [--prefix-newline]
    python -m pipeline.lm_eval --model EXPORT_DIR --tasks ... [--tokenizer PATH] [--out DIR]
    python -m pipeline.lm_eval --hf TEACHER_DIR --tasks ... [--out DIR]   (a distillation teacher)

The model runs through its inference state (see pipeline/eval/lm_adapter.py). Prints lm-eval's
results JSON on stdout and its table on stderr; writes `<run>/eval/step-<N>.json` (and the
per-sample `step-<N>-samples.jsonl`) and, for --run, logs `eval/<task>/<metric>` at step N into the
run's own MLflow run with both files as artifacts.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common.cli import command
from common.errors import UserError

from .eval import results as eval_results
from .eval.harness import DEFAULT_BOOTSTRAP_ITERS, parse_limit, parse_tasks, run_tasks
from .eval.lm_adapter import GoldFinchLM
from .inference.run_loading import LoadedModel, add_source_args, load, load_tokenizer


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.lm_eval",
                                     description=__doc__.splitlines()[0])
    add_source_args(parser, hf=True)
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--include-path", type=Path, help="extra directory of lm-eval task YAML")
    parser.add_argument("--limit", help="documents per task (or a fraction below 1)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="sequences per forward pass (default 8)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: the task's)")
    parser.add_argument("--tokenizer", help="tokenizer.json, data dir, or rwkv-world "
                                            "(default: the export's or the run's data dir's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="directory for the result files "
                                                 "(default: <run>/eval, or <model>/eval)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log into the run's MLflow run")
    parser.add_argument("--no-share-context", action="store_true",
                        help="pre-fill every request's context on its own (for comparison)")
    parser.add_argument("--prefix-newline", action="store_true",
                        help="feed the tokens of '\\n' before every request's context, as the "
                             "paper's evaluation did (its run_lm_eval.py)")
    parser.add_argument("--bootstrap-iters", type=int, default=DEFAULT_BOOTSTRAP_ITERS,
                        help="lm-eval's bootstrap resamples for standard errors (0 = none)")
    return parser.parse_args(argv)


def evaluate(loaded: LoadedModel, tokenizer, args: argparse.Namespace) -> dict:
    prefix = tokenizer.encode("\n") if args.prefix_newline else ()
    lm = GoldFinchLM(loaded.model, tokenizer, args.batch_size, args.device,
                     share_context=not args.no_share_context, prefix=prefix)
    return run_tasks(lm, parse_tasks(args.tasks), args.include_path, parse_limit(args.limit),
                     args.num_fewshot, args.bootstrap_iters)


def record(loaded: LoadedModel, results: dict, out: Path | None, log_mlflow: bool) -> dict:
    """Write the files and log to MLflow; returns where things went."""
    base = loaded.run_dir if loaded.run_dir is not None and loaded.step is not None else loaded.source
    summary, samples = eval_results.write(results, out or base / "eval", loaded.step)
    where = {"results_file": str(summary), "samples_file": str(samples)}
    if log_mlflow and loaded.run_dir is not None and loaded.step is not None:
        where["mlflow_run_id"] = eval_results.log_to_mlflow(
            loaded.run_dir, loaded.run_cfg, loaded.step, results, [summary, samples])
    return where


def evaluate_hf(args: argparse.Namespace) -> int:
    """The same tasks on a Hugging Face model through lm-eval's HFLM (offline; nothing is written
    into its dir: results go to --out, default runs/eval/<its name>)."""
    import os

    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import handle_non_serializable, make_table

    if not (args.hf / "config.json").is_file():
        raise FileNotFoundError(f"--hf {args.hf}: no config.json: not a Hugging Face model dir")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lm = HFLM(pretrained=str(args.hf), batch_size=args.batch_size, device=args.device)
    results = run_tasks(lm, parse_tasks(args.tasks), args.include_path, parse_limit(args.limit),
                        args.num_fewshot, args.bootstrap_iters)
    summary_path, samples = eval_results.write(results, args.out or Path("runs/eval") / args.hf.name, None)
    print(make_table(results), file=sys.stderr)
    summary = {k: v for k, v in results.items() if k != "samples"}
    summary.update(source=str(args.hf), results_file=str(summary_path), samples_file=str(samples))
    print(json.dumps(summary, default=handle_non_serializable))
    return 0


@command("pipeline.lm_eval")
def main(argv: list[str] | None = None) -> int:
    from lm_eval.utils import handle_non_serializable, make_table

    args = parse(argv)
    if args.batch_size <= 0:
        raise UserError(f"--batch-size={args.batch_size}: must be a positive integer")
    parse_tasks(args.tasks)
    parse_limit(args.limit)
    if args.hf:
        return evaluate_hf(args)
    loaded = load(args.run, args.model, args.step)
    tokenizer = load_tokenizer(loaded, args.tokenizer)
    results = evaluate(loaded, tokenizer, args)
    where = record(loaded, results, args.out, not args.no_mlflow)
    print(make_table(results), file=sys.stderr)
    summary = {k: v for k, v in results.items() if k != "samples"}
    summary.update(step=loaded.step, source=str(loaded.source), **where)
    print(json.dumps(summary, default=handle_non_serializable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
