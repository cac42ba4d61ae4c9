"""Run lm-evaluation-harness tasks on a loaded model through its Python API.

Task names resolve through lm-eval's TaskManager: its bundled tasks (which download their data
sets) plus any YAML task definitions under `include_path` (local files work offline).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from common.errors import UserError

from .lm_adapter import GoldFinchLM

DEFAULT_BOOTSTRAP_ITERS = 100000  # lm-eval's own default


def parse_tasks(text: str | list[str]) -> list[str]:
    tasks = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t) for t in text]
    tasks = [t for t in tasks if t]
    if not tasks:
        raise UserError("--tasks is empty: name at least one lm-eval task (e.g. lambada_openai)")
    return tasks


def parse_limit(text: str | float | int | None) -> int | float | None:
    """lm-eval's --limit: a count of documents per task, or a fraction below 1."""
    if text is None:
        return None
    value = float(text)
    if value <= 0:
        raise UserError(f"--limit={text}: must be > 0 (a count, or a fraction below 1)")
    return int(value) if value >= 1 and value == int(value) else value


def task_manager(tasks: list[str], include_path: str | Path | None):
    """Indexing lm-eval's hundreds of bundled tasks takes seconds, so when every task asked for
    is defined under include_path only that directory is indexed."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise FileNotFoundError(f"--include-path {include_path} is not a directory")
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task(s): {', '.join(unknown)}"
                        + ("" if include_path else " (local task YAML needs --include-path DIR)"))
    return manager


def run_tasks(lm: GoldFinchLM, tasks: list[str], include_path: str | Path | None = None,
              limit: int | float | None = None, num_fewshot: int | None = None,
              bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS, verbosity: str = "WARNING") -> dict:
    """lm-eval's results dict (with per-sample records under "samples"), plus the adapter's
    token counts and the wall time under "goldfinch"."""
    from lm_eval import simple_evaluate

    logging.getLogger("lm_eval").setLevel(verbosity)
    manager = task_manager(tasks, include_path)
    t0 = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=tasks, limit=limit, num_fewshot=num_fewshot,
                              task_manager=manager, log_samples=True,
                              bootstrap_iters=bootstrap_iters)
    results["goldfinch"] = {"seconds": time.perf_counter() - t0, "batch_size": lm.batch_size}
    if hasattr(lm, "stats"):  # our adapter; a Hugging Face teacher runs through lm-eval's own
        results["goldfinch"].update(share_context=lm.share_context, tokens_fed=dict(lm.stats))
    return results
