"""Pre-fill time vs prompt length: tiny GoldFinch (linear pre-fill) against tiny Llama.

    python benchmarks/prefill.py [--lengths 1024 2048 4096 8192 16384] [--repeats 3] [--plot PATH]

Both models see the same prompts in one run; prints each time and the ratio per doubling
(GoldFinch's goal: <= 2.2x per doubling, i.e. linear in the prompt length), and draws time vs
prompt length on log-log axes (default docs/img/prefill.png), where linear growth is a line of
slope 1 and quadratic growth one of slope 2.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import _repo_path  # noqa: E402,F401  (first: the `kernels` package, not benchmarks/kernels.py)
from model import build_model, load_model_config  # noqa: E402


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


def plot(results: dict[str, dict[int, float]], out: Path, title: str) -> Path:
    """Time vs prompt length per arch, log-log, with a slope-1 guide through the first point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for arch, times in results.items():
        ax.plot(list(times), list(times.values()), "o-", label=arch)
    first = next(iter(results.values()))
    n0, t0 = next(iter(first.items()))
    lengths = sorted(first)
    ax.plot(lengths, [t0 * n / n0 for n in lengths], ":", color="grey", label="linear (slope 1)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("pre-fill time (s)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--archs", nargs="+", default=["goldfinch", "llama"])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/prefill.png"),
                        help="PNG of time vs prompt length, log-log (default: %(default)s)")
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = platform.processor() or platform.machine()
    header = f"pre-fill, batch 1, fp32, {torch.get_num_threads()} threads, {cpu}"
    print(f"# {header}")
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
        doublings = math.log2(args.lengths[-1] / args.lengths[0])
        if doublings > 0:
            mean = (times[-1] / times[0]) ** (1 / doublings)
            print(f"    mean per doubling {args.lengths[0]} -> {args.lengths[-1]}: {mean:.2f}x")
    if len(args.archs) > 1:
        base = args.archs[0]
        for other in args.archs[1:]:
            line = "  ".join(f"{n}: {results[other][n] / results[base][n]:.2f}x" for n in args.lengths)
            print(f"{other} / {base} time: {line}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    print(f"plot: {plot(results, args.plot, header)}")


if __name__ == "__main__":
    main()
