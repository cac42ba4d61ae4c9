"""lm-eval tasks during training (train.eval_every, train.eval_tasks), on rank 0.

Exact resume is kept: evaluation only reads the weights (no gradients, eval mode for its
duration), draws nothing from the data streams, and puts back the global random state lm-eval
reseeds. A failing evaluation is a warning; training goes on. The scores land in
`<run>/eval/step-<N>.json` and in the tracking run as `eval/<task>/<metric>` at step N, exactly as
`python -m pipeline.lm_eval --run <run> --step N` would write them.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..training import checkpointing


def due(train_cfg, step: int) -> bool:
    every = train_cfg.eval_every
    return bool(every) and (step % every == 0 or step == train_cfg.max_steps)


def evaluate_now(module: torch.nn.Module, data_path: str, train_cfg, step: int, run_dir: Path,
                 tracker, device) -> dict | None:
    """Run the tasks on the live weights; returns the results (None when evaluation failed)."""
    from data_prep.text_codec import load_codec

    from . import results as eval_results
    from .harness import parse_limit, run_tasks
    from .lm_adapter import GoldFinchLM  # lm-eval is imported only by runs that evaluate

    saved_rng = checkpointing.rng_state()
    was_training = module.training
    try:
        lm = GoldFinchLM(module, load_codec(str(data_path)), train_cfg.micro_batch, device)
        results = run_tasks(lm, list(train_cfg.eval_tasks), train_cfg.eval_include_path,
                            parse_limit(train_cfg.eval_limit), bootstrap_iters=0)
        files = eval_results.write(results, run_dir / "eval", step)
        tracker.log_metrics(eval_results.scores(results), step)
        for path in files:
            tracker.log_file(path, "eval")
        return results
    except Exception as err:  # an evaluation must never stop the run it observes
        warnings.warn(f"evaluation at step {step} failed ({type(err).__name__}: {err}); "
                      f"training goes on", stacklevel=2)
        return None
    finally:
        module.train(was_training)
        checkpointing.set_rng_state(saved_rng)
