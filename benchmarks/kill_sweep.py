"""A seeded sweep of kill -9 points in a 2-rank run with freeze phases: is every resume bitwise
identical to the uninterrupted run?

    python benchmarks/kill_sweep.py --points N [--seed 0] [--steps 8] [--save-every 2] [--keep DIR]

One uninterrupted reference run (2 ranks under torchrun --standalone, ZeRO-2, two freeze phases,
a checkpoint every --save-every steps), then per point a fresh run killed there and resumed by the
same command. A point is a GOLDFINCH_FAULTS entry (pipeline/training/faults.py): SIGKILL right
after a step's metrics are written, or in the middle of a checkpoint save, on rank 0 or 1, drawn
without repeats from every such point of the run by --seed. A resume is identical when its
metrics.jsonl has the reference's (step, loss) rows, bit for bit. Exits 1 if any point differs.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from _repo_path import ROOT  # noqa: F401  (first: the repository's packages, and tests/ helpers)

from pipeline_helpers import make_data_dir, metrics, run_train

PHASES = "freeze.phases=[{until_step:3,train:[gold,head]},{train:[all],lr_scale:0.5}]"
RANKS = (0, 1)
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo"}  # the ranks talk over the loopback interface


def kill_points(n: int, seed: int, steps: int, save_every: int) -> list[str]:
    """n distinct fault specs drawn by seed from every kill point of the run."""
    after = [f"kill_after_step:{s}:{r}" for s in range(1, steps) for r in RANKS]
    in_save = [f"kill_in_save:{s}:{r}" for s in range(save_every, steps, save_every) for r in RANKS]
    candidates = after + in_save
    if not 1 <= n <= len(candidates):
        raise ValueError(f"--points {n}: this run has {len(candidates)} kill points (1..{len(candidates)})")
    return random.Random(seed).sample(candidates, n)


def run_args(steps: int, save_every: int) -> list[str]:
    return ["train.zero_stage=2", f"train.max_steps={steps}", f"train.save_every={save_every}",
            "train.keep_last=100", "train.global_batch=8", "train.micro_batch=2", "train.export=false", PHASES]


def rows(root: Path, run: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics(root, run)]


def one_point(root: Path, i: int, fault: str, args: list[str], reference) -> tuple[bool, str]:
    """Kill a fresh run at `fault`, resume it; (identical, what happened)."""
    run = f"train.run_name=kill{i}"
    killed = run_train(root, run, *args, nproc=2, check=False, env={**LOOPBACK, "GOLDFINCH_FAULTS": fault})
    if killed.returncode == 0:
        return False, "the fault did not fire (the run finished)"
    resumed = run_train(root, run, *args, nproc=2, check=False, env=LOOPBACK)
    if resumed.returncode != 0:
        return False, f"the resume failed: {resumed.stderr.strip().splitlines()[-1:]}"
    found = re.search(r"resumed from (\S+) at step (\d+)", resumed.stdout + resumed.stderr)
    start = f"resumed from {found.group(1)}" if found else "started over (no complete checkpoint)"
    got = rows(root, f"kill{i}")
    if got == reference:
        return True, f"{start}, {len(got)}/{len(reference)} steps"
    first = next((a[0] for a, b in zip(got, reference) if a != b), min(len(got), len(reference)) + 1)
    return False, f"{start}, {len(got)}/{len(reference)} steps, first difference at step {first}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, required=True, help="kill points to try")
    parser.add_argument("--seed", type=int, default=0, help="which points (default 0)")
    parser.add_argument("--steps", type=int, default=8, help="steps of the run (default 8)")
    parser.add_argument("--save-every", type=int, default=2, help="checkpoint interval (default 2)")
    parser.add_argument("--keep", type=Path, help="keep the runs in this dir (default: a temporary one)")
    args = parser.parse_args()
    try:
        faults = kill_points(args.points, args.seed, args.steps, args.save_every)
    except ValueError as err:
        print(f"kill_sweep: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kill_sweep_") as tmp:
        root = args.keep or Path(tmp)
        make_data_dir(root / "data", docs_per_shard=(30, 30), val_docs=(10,))
        train_args = run_args(args.steps, args.save_every)
        t0 = time.perf_counter()
        run_train(root, "train.run_name=reference", *train_args, nproc=2, env=LOOPBACK)
        reference = rows(root, "reference")
        print(f"reference: {len(reference)} steps, 2 ranks, ZeRO-2, {PHASES} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        identical = 0
        for i, fault in enumerate(faults):
            same, what = one_point(root, i, fault, train_args, reference)
            identical += same
            print(f"point {i + 1}/{len(faults)}: {fault:<22} {'identical' if same else 'DIFFERS'}: {what}",
                  flush=True)
    print(f"kill_sweep: {identical}/{len(faults)} resumes bitwise identical (seed {args.seed}, "
          f"{time.perf_counter() - t0:.0f} s)")
    return 0 if identical == len(faults) else 1


if __name__ == "__main__":
    sys.exit(main())
