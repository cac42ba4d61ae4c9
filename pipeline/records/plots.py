"""The loss curve of a run, from its metrics.jsonl, as a PNG (logged to MLflow at the end)."""
from __future__ import annotations

from pathlib import Path


def loss_curve(records: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["tokens"], r["loss"]) for r in records if r.get("loss") is not None]
    val = [(r["tokens"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss")
    return save(fig, ax, out, "tokens", "loss (nats/token)", title)


def save(fig, ax, out: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid, legend and write a figure as PNG; closes it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
