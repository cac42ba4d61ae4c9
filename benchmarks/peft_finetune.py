"""Bone vs Bat vs full fine-tuning at equal steps on a small continued-training task.

    python benchmarks/peft_finetune.py [--out DIR] [--pretrain-steps 60] [--steps 40] [--r 16]
        [--lr 2e-3] [--summarize-only] [key=value ...]

Pre-trains a tiny Finch on one synthetic data dir (the tests' learnable documents), then fine-tunes
it from that run (train.init_from) on another one (the same kind of documents, new ones) three
ways with the same seed, lr and data order: every parameter, `peft.method=bone` and
`peft.method=bat` (default targets and train_also). Prints, side by side: the loss of step 1 (the
pre-trained model on the new documents), the mean training loss of the last 5 steps, the val loss at the end, trainable parameters, optimizer-state bytes and the
median step time. The full run gets a one-phase `freeze.phases` that trains everything, only so
that it logs its trainable count and optimizer-state bytes like the PEFT runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import _repo_path  # noqa: F401  (the repo root and tests/ on sys.path)
from pipeline_helpers import make_data_dir

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["model.arch=finch", "model.n_layer=3", "model.n_embd=128", "model.head_size=32",
         "model.ctx_len=64", "model.mix_lora_rank=8", "model.decay_lora_rank=8"]
TRAIN = ["train.micro_batch=8", "train.warmup_steps=5", "train.val_every=0", "train.log_every=0",
         "train.export=false", "train.save_every=0", "tracking.enabled=false"]
METHODS = {"full": ["freeze.phases=[{train:[all]}]"], "bone": ["peft.method=bone"],
           "bat": ["peft.method=bat"]}


def train(out: Path, name: str, data: Path, steps: int, lr: float, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "pipeline.train", *MODEL, *TRAIN, f"data.path={data}",
           f"train.out_dir={out / 'runs'}", f"train.run_name={name}", f"train.max_steps={steps}",
           f"train.lr={lr}", f"train.lr_final={lr / 2}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")


def summary(out: Path, name: str) -> dict:
    rows = [json.loads(line) for line in (out / "runs" / name / "metrics.jsonl").open()]
    step_s = [r["tokens"] / r["step"] / r["tokens_per_s"] for r in rows[2:]]
    return {"method": name.removeprefix("ft-"), "loss_step1": rows[0]["loss"], "loss_last5": statistics.mean(r["loss"] for r in rows[-5:]),
            "val_loss": rows[-1]["val_loss"], "trainable_params": rows[-1]["trainable_params"],
            "optimizer_state_bytes": rows[-1]["optimizer_state_bytes"],
            "step_ms": 1000 * statistics.median(step_s)}


def table(rows: list[dict]) -> str:
    lines = ["| method | loss at step 1 | loss (last 5) | val loss | trainable params | optimizer state | step |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['loss_step1']:.4f} | {r['loss_last5']:.4f} | {r['val_loss']:.4f} | "
              f"{r['trainable_params']:,} | {r['optimizer_state_bytes'] / 1024:,.0f} KiB | "
              f"{r['step_ms']:.0f} ms |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-peft"))
    parser.add_argument("--pretrain-steps", type=int, default=60)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--summarize-only", action="store_true", help="read runs already made")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = args.out.resolve()
    if not args.summarize_only:
        make_data_dir(out / "data-pre", docs_per_shard=(120, 120), val_docs=(20,), seed=0)
        make_data_dir(out / "data-ft", docs_per_shard=(120, 120), val_docs=(20,), seed=1)
        train(out, "pretrain", out / "data-pre", args.pretrain_steps, args.lr, args.overrides)
        val = [f"train.val_every={args.steps}", "train.val_batches=4", f"peft.r={args.r}",
               f"train.init_from={out / 'runs' / 'pretrain'}"]
        for method, keys in METHODS.items():
            train(out, f"ft-{method}", out / "data-ft", args.steps, args.lr, [*val, *keys, *args.overrides])
    rows = [summary(out, f"ft-{m}") for m in METHODS]
    for row in rows:
        print(json.dumps(row))
    print(table(rows))


if __name__ == "__main__":
    main()
