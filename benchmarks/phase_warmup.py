"""The loss around a freeze-phase switch, with and without a warm-up of the newly trainable
parameters.

    python benchmarks/phase_warmup.py [--out DIR] [--switch 30] [--steps 45] [--warmup 0 10]
        [--summarize-only] [key=value ...]

Trains goldfinch-tiny on data/default once per warm-up length: phase 1 trains only the GOLD blocks,
phase 2 everything ({train:[all],warmup_steps:W}). Same seed, data order and phase 1 in every run,
so the losses differ only after the switch. Prints the losses just before and after it, and the
largest rise over the last pre-switch loss in the ten steps after it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import _repo_path  # noqa: F401  (the repo root on sys.path)

ROOT = Path(__file__).resolve().parent.parent
BASE = ["--config", "configs/model/goldfinch-tiny.yaml", "model.ctx_len=128", "train.micro_batch=8",
        "train.lr=2e-3", "train.lr_final=1e-3", "train.val_every=0", "train.log_every=0",
        "train.export=false", "train.save_every=0", "tracking.enabled=false"]


def run(out: Path, warmup: int, switch: int, steps: int, extra: list[str]) -> None:
    phases = f"freeze.phases=[{{until_step:{switch},train:[gold]}},{{train:[all],warmup_steps:{warmup}}}]"
    cmd = [sys.executable, "-m", "pipeline.train", *BASE, f"train.out_dir={out}",
           f"train.run_name=phase-warmup-{warmup}", f"train.max_steps={steps}", phases, *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)


def summary(out: Path, warmup: int, switch: int) -> dict:
    rows = [json.loads(line) for line in (out / f"phase-warmup-{warmup}" / "metrics.jsonl").open()]
    loss = {r["step"]: r["loss"] for r in rows}
    before = loss[switch]
    after = [loss[s] for s in range(switch + 1, switch + 11) if s in loss]
    return {"warmup_steps": warmup, "loss_at_switch": before,
            "after": [round(x, 4) for x in after[:5]],
            "max_rise_10": max(after) - before, "mean_10_after": sum(after) / len(after),
            "final": rows[-1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-phase-warmup"))
    parser.add_argument("--switch", type=int, default=30)
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--warmup", type=int, nargs="+", default=[0, 10])
    parser.add_argument("--summarize-only", action="store_true", help="read runs already made")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for w in args.warmup:
        if not args.summarize_only:
            run(args.out.resolve(), w, args.switch, args.steps, args.overrides)
        print(json.dumps(summary(args.out.resolve(), w, args.switch)))


if __name__ == "__main__":
    main()
