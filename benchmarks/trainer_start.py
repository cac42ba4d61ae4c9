"""How much of a tiny training run is start-up, measured side by side in one run: the same run
(4 steps, a checkpoint every 2) launched the ways the test suite launches the trainer
(tests/pipeline_helpers.py run_train):

1. `python -m pipeline.train` vs the same run inside a process that has already imported it
   (tests/in_process.py);
2. 2 ranks under `torchrun --standalone` vs 2 ranks forked from a server that has imported it
   (tests/rank_processes.py);
3. one rank killed by a fault after step 3, forked.

Every way must log the same losses, bit for bit (exit 1 if not). The first in-process and forked
runs pay the imports once; the ratios use the next ones, as the suite's later runs do.

    python benchmarks/trainer_start.py [--steps 4] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: F401  (first: the repository's packages, and tests/ helpers)

from pipeline_helpers import make_data_dir, metrics, run_train

WAYS = {  # name: (nproc, command, fault)
    "command, 1 rank": (1, True, None),
    "in process, 1 rank": (1, False, None),
    "torchrun, 2 ranks": (2, True, None),
    "forked, 2 ranks": (2, False, None),
    "forked, 1 rank killed after step 3": (1, False, "kill_after_step:3"),
}


def timed_run(root: Path, name: str, steps: int, nproc: int, command: bool, fault: str | None) -> float:
    t0 = time.perf_counter()
    proc = run_train(root, f"train.run_name={name}", f"train.max_steps={steps}", "train.save_every=2",
                     "train.global_batch=8", "train.export=false", nproc=nproc, command=command,
                     check=fault is None, env={"GOLDFINCH_FAULTS": fault} if fault else None)
    if fault and proc.returncode == 0:
        raise SystemExit(f"trainer_start: the fault {fault} did not fire")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per run (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per way (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainer_start_") as tmp:
        root = Path(tmp)
        make_data_dir(root / "data", docs_per_shard=(30, 30), val_docs=(10,))
        for nproc, command, fault in WAYS.values():  # warm-up: the imports, once per way
            timed_run(root, f"warm{nproc}{command}{fault}", args.steps, nproc, command, fault)
        seconds, losses = {}, {}
        for way, (nproc, command, fault) in WAYS.items():
            runs = [f"{i}-{way.replace(' ', '_').replace(',', '')}" for i in range(args.repeats)]
            seconds[way] = min(timed_run(root, run, args.steps, nproc, command, fault) for run in runs)
            losses[way] = {tuple(r["loss"] for r in metrics(root, run)) for run in runs}
    for way, s in seconds.items():
        print(f"{way:<36} {s:6.2f} s")
    print(f"in process / command: {seconds['in process, 1 rank'] / seconds['command, 1 rank']:.3f}x; "
          f"forked / torchrun: {seconds['forked, 2 ranks'] / seconds['torchrun, 2 ranks']:.3f}x")
    whole = {ls for way, found in losses.items() if "killed" not in way for ls in found}
    print(f"losses identical across the ways: {len(whole) == 1}")
    return 0 if len(whole) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
