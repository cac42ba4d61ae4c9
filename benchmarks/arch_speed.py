"""Training speed of the tiny presets on CPU, measured side by side in one run: tokens/s of a
full AdamW step (forward, backward, update) for each preset, interleaved round by round so that
load on the machine falls on all of them alike, and each as a ratio to finch-tiny.

    python benchmarks/arch_speed.py [--presets finch-tiny rwkv7-tiny ...] [--rounds 5]
        [--batch 8] [--ctx 256] [--vocab 16384]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import _repo_path  # noqa: F401  (the packages, not benchmarks/*.py)
from model import build_model, load_model_config

PRESETS = ("finch-tiny", "goldfinch-tiny", "rwkv7-tiny", "goldfinch7-tiny", "llama-tiny")


def stepper(preset: str, vocab: int):
    torch.manual_seed(0)
    model = build_model(load_model_config(preset, [f"vocab_size={vocab}"]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(idx: torch.Tensor) -> float:
        start = time.perf_counter()
        loss, _ = model(idx[:, :-1], targets=idx[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=16384)
    args = parser.parse_args()
    idx = torch.randint(0, args.vocab, (args.batch, args.ctx + 1))
    steps = {p: stepper(p, args.vocab) for p in args.presets}
    for step in steps.values():
        step(idx)  # warm-up
    times = {p: [] for p in args.presets}
    for _ in range(args.rounds):
        for p, step in steps.items():
            times[p].append(step(idx))
    tokens = args.batch * args.ctx
    rate = {p: tokens / statistics.median(t) for p, t in times.items()}
    base = rate.get("finch-tiny", next(iter(rate.values())))
    print(f"threads {torch.get_num_threads()}, batch {args.batch} x ctx {args.ctx}, vocab {args.vocab}, "
          f"median of {args.rounds} interleaved steps")
    for p, r in rate.items():
        print(f"{p:18s} {r:9.0f} tokens/s   x{r / base:.2f} of finch-tiny")


if __name__ == "__main__":
    main()
