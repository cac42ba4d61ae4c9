"""MLflow tracking that can never stop a training run.

The default store is embedded (sqlite + local artifacts under `tracking.dir`, no server);
`tracking.uri` points at a remote server instead. The run id is kept in the run dir, so a resumed
run continues the same MLflow run. Steps that a resumed run replays were logged before the crash
(exact resume reproduces them), so they are not logged twice. Any MLflow failure gives one warning
and turns tracking off for the rest of the run; metrics.jsonl stays complete regardless.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

RUN_ID_FILE = "mlflow_run_id"
# the MLflow 3 UI opens an experiment with this tag as model training, not as GenAI evaluation
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None  # unset: the embedded store in `dir`
    dir: str = "mlruns"  # the embedded store: mlflow.db + artifacts/
    experiment: str = "goldfinch"
    system_metrics_every: float = 10.0  # seconds between CPU/memory/GPU samples (0 = off)


def store_uris(cfg: TrackingConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments or None for the server's default)."""
    if cfg.uri:
        return cfg.uri, None
    root = Path(cfg.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


class Tracker:
    """Rank 0's MLflow run; every method is a no-op once tracking is off."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, enabled: bool):
        self.cfg, self.run_dir = cfg, run_dir
        self.client = None
        self.run_id: str | None = None
        self.logged_up_to = 0  # the highest step already in the MLflow run
        self.on = enabled and cfg.enabled
        self.monitor = None  # MLflow's system metrics sampler (a thread)
        self.ended = False  # set_terminated done: later finish() calls change nothing

    def _fail(self, what: str, err: Exception) -> None:
        warnings.warn(f"MLflow {what} failed ({type(err).__name__}: {err}); training goes on without "
                      f"tracking, metrics stay in {self.run_dir / 'metrics.jsonl'}", stacklevel=3)
        self.on, self.client = False, None
        if self.monitor is not None:
            self.monitor._shutdown_event.set()  # its thread ends at its next wake-up
            self.monitor = None

    def start(self, run_name: str, params: dict, tags: dict[str, str]) -> None:
        if not self.on:
            return
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Param

            uri, artifacts = store_uris(self.cfg)
            self.client = MlflowClient(tracking_uri=uri)
            id_file = self.run_dir / RUN_ID_FILE
            if id_file.is_file():
                self.run_id = id_file.read_text().strip()
                self.client.update_run(self.run_id, status="RUNNING")
                exp_id = self.client.get_run(self.run_id).info.experiment_id
                history = self.client.get_metric_history(self.run_id, "loss")
                self.logged_up_to = max((m.step for m in history), default=0)
            else:
                exp = self.client.get_experiment_by_name(self.cfg.experiment)
                exp_id = (exp.experiment_id if exp else
                          self.client.create_experiment(self.cfg.experiment, artifact_location=artifacts))
                self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
                items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
                for i in range(0, len(items), 100):
                    self.client.log_batch(self.run_id, params=items[i:i + 100])
                id_file.write_text(self.run_id + "\n")
            self.client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
            self._start_system_metrics(uri)
        except Exception as err:
            self._fail("start", err)

    def _start_system_metrics(self, uri: str) -> None:
        """CPU, memory, disk, network (and GPU where NVML finds one) as system/* metrics, in the
        run's System metrics tab; a resumed run continues their step count."""
        if not self.cfg.system_metrics_every:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.monitor = SystemMetricsMonitor(self.run_id, self.cfg.system_metrics_every,
                                            resume_logging=True, tracking_uri=uri)
        self.monitor.start()

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Metrics at a step whatever the loss curve has reached (evaluation scores)."""
        if not self.on:
            return
        try:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
        except Exception as err:
            self._fail("logging", err)

    def log_step(self, record: dict) -> None:
        if not self.on or record["step"] <= self.logged_up_to:
            return
        try:
            from mlflow.entities import Metric

            now, step = int(time.time() * 1000), record["step"]
            metrics = [Metric(key, float(value), now, step) for key, value in record.items()
                       if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)]
            self.client.log_batch(self.run_id, metrics=metrics)
            self.logged_up_to = step
        except Exception as err:
            self._fail("logging", err)

    def log_event(self, text: str, artifact_file: str) -> None:
        if not self.on:
            return
        try:
            self.client.log_text(self.run_id, text, artifact_file)
        except Exception as err:
            self._fail("logging", err)

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        if not self.on:
            return
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as err:
            self._fail("artifact upload", err)

    def finish(self, status: str = "FINISHED") -> None:
        """End the MLflow run as FINISHED, KILLED or FAILED; only the first call counts (a resume
        reopens the run as RUNNING)."""
        if not self.on or self.ended or self.run_id is None:
            return
        try:
            if self.monitor is not None:
                self.monitor.finish()
                self.monitor = None
            self.client.set_terminated(self.run_id, status=status)
            self.ended = True
        except Exception as err:
            self._fail("finish", err)
