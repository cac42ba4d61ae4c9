"""Where evaluation results go: a JSON file per checkpoint step, and the run's own MLflow run.

`runs/<name>/eval/step-<N>.json` holds lm-eval's results (without the per-sample records, which go
to `step-<N>-samples.jsonl` beside it). In MLflow every numeric score becomes `eval/<task>/<metric>`
at step N, in the run the trainer logged the loss curve into, so scores plot against the loss.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..records.tracking import RUN_ID_FILE, TrackingConfig, store_uris

BAD_CHARS = re.compile(r"[^\w./\- ]")


def file_stem(step: int | None) -> str:
    return f"step-{step}" if step is not None else "export"


def write(results: dict, out_dir: Path, step: int | None) -> tuple[Path, Path]:
    """(summary JSON, per-sample JSON lines); lm-eval's own serializer handles what json cannot."""
    from lm_eval.utils import handle_non_serializable

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(step)
    summary = {k: v for k, v in results.items() if k != "samples"}
    summary["step"] = step
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(summary, indent=2, default=handle_non_serializable) + "\n")
    samples_path = out_dir / f"{stem}-samples.jsonl"
    with samples_path.open("w") as f:
        for task, records in results.get("samples", {}).items():
            for record in records:
                f.write(json.dumps({"task": task, **record}, default=handle_non_serializable) + "\n")
    return path, samples_path


def scores(results: dict) -> dict[str, float]:
    """`eval/<task>/<metric>` -> value for every numeric score of every task and group. lm-eval
    names a score `metric,filter`; the default filter ("none") is dropped, others are appended.
    Keys without a filter are bookkeeping (sample_len), not scores."""
    out = {}
    for section in ("results", "groups"):
        for task, metrics in results.get(section, {}).items():
            for key, value in metrics.items():
                if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue  # not a score (sample_len), or not a number ("N/A" standard errors)
                metric, _, filt = key.partition(",")
                name = metric if filt in ("", "none") else f"{metric}.{filt}"
                out[BAD_CHARS.sub("_", f"eval/{task}/{name}")] = float(value)
    return out


def mlflow_run_id(run_dir: Path) -> str:
    id_file = run_dir / RUN_ID_FILE
    if not id_file.is_file():
        raise FileNotFoundError(f"{id_file} is missing: the run was not tracked in MLflow "
                                f"(pass --no-mlflow to only write the JSON)")
    return id_file.read_text().strip()


def log_to_mlflow(run_dir: Path, run_cfg: DictConfig, step: int, results: dict,
                  files: list[Path]) -> str:
    """Scores at `step` and the result files as artifacts (under eval/) into the run's MLflow run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    run_id = mlflow_run_id(run_dir)
    tracking = TrackingConfig(**OmegaConf.to_container(run_cfg.tracking))
    client = MlflowClient(tracking_uri=store_uris(tracking)[0])
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for key, value in scores(results).items()]
    for i in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[i:i + 500])
    for path in files:
        client.log_artifact(run_id, str(path), "eval")
    return run_id
