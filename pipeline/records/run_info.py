"""What a run records about itself: tags at the start, the loss curve and the export at the end."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import torch

from .. import runs
from .plots import loss_curve

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(cfg, data, dist) -> dict[str, str]:
    """Tags for the tracking run. Collective (all ranks gather their host names)."""
    hosts: list = [None] * dist.world
    torch.distributed.all_gather_object(hosts, socket.gethostname())
    return {"git_commit": git_commit(), "world_size": str(dist.world),
            "host_count": str(len(set(hosts))), "arch": cfg.model.arch, **data.tags()}


def finish_run(cfg, run_dir: Path, records: list[dict], tracker) -> None:
    """Rank 0, after the last checkpoint: loss curve, exported weights, and the tracking run closed."""
    tracker.log_file(run_dir / runs.RUN_CONFIG)
    if records:
        tracker.log_file(loss_curve(records, run_dir / "loss_curve.png", cfg.train.run_name))
    if cfg.train.export:
        from ..inference.exporting import export

        out = export(run_dir, run_dir / runs.EXPORT)
        tracker.log_file(out / "model.safetensors", "model")
        tracker.log_file(out / "config.json", "model")
    tracker.finish("FINISHED")
