"""Pre-fill time vs prompt length: tiny GoldFinch (linear pre-fill) against tiny Llama.

    python benchmarks/prefill.py [--lengths 1024 2048 4096 8192 16384] [--repeats 2]

Both models see the same prompts in one run; prints each time and the ratio per doubling
(GoldFinch's goal: <= 2.2x per doubling, i.e. linear in the prompt length).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from model import build_model, load_model_config


@torch.no_grad()
def prefill_seconds(model, length: int, repeats: int, vocab: int) -> float:
    idx = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(length))
    model(idx[:, :64], last_only=True)  # warm-up: allocator and kernels
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(idx, last_only=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--archs", nargs="+", default=["goldfinch", "llama"])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"# pre-fill, batch 1, fp32, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    results = {}
    for arch in args.archs:
        cfg = load_model_config(f"{arch}-tiny", [f"vocab_size={args.vocab}"])
        model = build_model(cfg).eval()
        times = [prefill_seconds(model, n, args.repeats, args.vocab) for n in args.lengths]
        results[arch] = dict(zip(args.lengths, times))
        print(f"{arch:>10} ({model.num_params() / 1e6:.1f} M params)")
        for i, (n, t) in enumerate(zip(args.lengths, times)):
            ratio = f"{t / times[i - 1]:.2f}x" if i else "-"
            print(f"    {n:>6} tokens  {t * 1000:9.1f} ms  {n / t:9.0f} tok/s  per doubling {ratio}")
    if len(args.archs) > 1:
        base = args.archs[0]
        for other in args.archs[1:]:
            line = "  ".join(f"{n}: {results[other][n] / results[base][n]:.2f}x" for n in args.lengths)
            print(f"{other} / {base} time: {line}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
