"""A seeded sweep of kill -9 points in a 2-rank run with freeze phases: is every resume bitwise
identical to the uninterrupted run?

    python benchmarks/kill_sweep.py --points N [--seed 0] [--steps 8] [--save-every 2] [--val-every 3] [--keep DIR]

One uninterrupted reference run (2 ranks under torchrun --standalone, ZeRO-2, two freeze phases,
a checkpoint every --save-every steps, validation every --val-every steps and at the end), then
per point a fresh run killed there and resumed by the same command. A single point is a
GOLDFINCH_FAULTS entry (pipeline/instruments/faults.py): SIGKILL right after a step's metrics are
written, in the middle of a checkpoint save, or in the middle of a validation, on rank 0 or 1. A
double point (`A then B`) kills at A, resumes, kills the resumed run at B before it completes its
next checkpoint, and resumes again. Points are drawn by --seed without repeats, one kind after
another (after a step, in a save, in validation, double), so every kind is tried once N >= 4. A
resume is identical when its metrics.jsonl has the reference's (step, loss) rows, bit for bit.
Exits 1 if any point differs.
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


THEN = " then "  # joins the faults of a double point, one per launch


def _step(fault: str) -> int:
    return int(fault.split(":")[1])


def single_points(steps: int, save_every: int, val_every: int) -> dict[str, list[str]]:
    """Every single kill point of the run, by kind."""
    val_steps = sorted({s for s in range(val_every, steps, val_every)} | {steps})
    return {"after_step": [f"kill_after_step:{s}:{r}" for s in range(1, steps) for r in RANKS],
            "in_save": [f"kill_in_save:{s}:{r}" for s in range(save_every, steps, save_every) for r in RANKS],
            "in_val": [f"kill_in_val:{s}:{r}" for s in val_steps for r in RANKS]}


def double_points(singles: list[str], save_every: int) -> list[str]:
    """`A then B`: B kills the run resumed after A before that run completes a checkpoint. Every
    kind of single kill at step s leaves the checkpoint of step ((s-1) // save_every) * save_every
    as the newest complete one, so B is any kill point in the steps up to the next save."""
    points = []
    for first in singles:
        resumed_at = (_step(first) - 1) // save_every * save_every
        points += [f"{first}{THEN}{second}" for second in singles
                   if resumed_at < _step(second) <= resumed_at + save_every]
    return points


def kill_points(n: int, seed: int, steps: int, save_every: int, val_every: int = 3) -> list[str]:
    """n distinct points drawn by seed, taking the kinds in turn so that each is tried."""
    kinds = single_points(steps, save_every, val_every)
    kinds["double"] = double_points([p for kind in kinds.values() for p in kind], save_every)
    total = sum(len(kind) for kind in kinds.values())
    if not 1 <= n <= total:
        raise ValueError(f"--points {n}: this run has {total} kill points (1..{total})")
    rng = random.Random(seed)
    shuffled = [rng.sample(kind, len(kind)) for kind in kinds.values()]
    turns = (kind[i] for i in range(max(map(len, shuffled))) for kind in shuffled if i < len(kind))
    return [next(turns) for _ in range(n)]


def run_args(steps: int, save_every: int, val_every: int = 3) -> list[str]:
    return ["train.zero_stage=2", f"train.max_steps={steps}", f"train.save_every={save_every}",
            f"train.val_every={val_every}", "train.val_batches=1", "train.keep_last=100",
            "train.global_batch=8", "train.micro_batch=2", "train.export=false", PHASES]


def rows(root: Path, run: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics(root, run)]


def one_point(root: Path, i: int, point: str, args: list[str], reference,
              command: bool = False) -> tuple[bool, str]:
    """Kill a fresh run at each fault of `point` in turn, resuming in between, then let the last
    resume finish; (identical, what happened). `command`: launch with torchrun itself, not ranks
    forked from this process (tests/pipeline_helpers.py run_train)."""
    run = f"train.run_name=kill{i}"
    for n, fault in enumerate(point.split(THEN)):
        killed = run_train(root, run, *args, nproc=2, check=False, command=command,
                           env={**LOOPBACK, "GOLDFINCH_FAULTS": fault})
        if killed.returncode == 0:
            return False, f"the fault {fault} did not fire (launch {n + 1} finished)"
    resumed = run_train(root, run, *args, nproc=2, check=False, env=LOOPBACK, command=command)
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
    parser.add_argument("--val-every", type=int, default=3, help="validation interval (default 3)")
    parser.add_argument("--keep", type=Path, help="keep the runs in this dir (default: a temporary one)")
    args = parser.parse_args()
    try:
        faults = kill_points(args.points, args.seed, args.steps, args.save_every, args.val_every)
    except ValueError as err:
        print(f"kill_sweep: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kill_sweep_") as tmp:
        root = args.keep or Path(tmp)
        make_data_dir(root / "data", docs_per_shard=(30, 30), val_docs=(10,))
        train_args = run_args(args.steps, args.save_every, args.val_every)
        t0 = time.perf_counter()
        run_train(root, "train.run_name=reference", *train_args, nproc=2, env=LOOPBACK, command=True)
        reference = rows(root, "reference")
        print(f"reference: {len(reference)} steps, 2 ranks, ZeRO-2, {PHASES} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        identical = 0
        for i, fault in enumerate(faults):
            same, what = one_point(root, i, fault, train_args, reference, command=True)
            identical += same
            print(f"point {i + 1}/{len(faults)}: {fault:<22} {'identical' if same else 'DIFFERS'}: {what}",
                  flush=True)
    print(f"kill_sweep: {identical}/{len(faults)} resumes bitwise identical (seed {args.seed}, "
          f"{time.perf_counter() - t0:.0f} s)")
    return 0 if identical == len(faults) else 1


if __name__ == "__main__":
    sys.exit(main())
