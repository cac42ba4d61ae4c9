"""What pre-filling a shared context once saves in lm-eval's loglikelihood requests.

    python benchmarks/lm_eval_reuse.py [--arch goldfinch] [--docs 32] [--choices 4]
        [--context 160] [--continuation 24] [--batch-size 8] [--repeats 2] [n_layer=6 ...]

A HellaSwag-shaped workload (every document: one context, several endings) scored by the
evaluation adapter twice: with each distinct context pre-filled once and its state reused for
every ending, and with every request pre-filling its own context (what an adapter without state
reuse does). Same model (the default tiny config, random weights), same token ids, same batching;
prints tokens fed, the best wall and process-CPU seconds of each over interleaved repeats, the
ratios, and the largest difference in log-likelihood.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import _repo_path  # noqa: F401  (the repo root on sys.path)
from model import build_model, load_model_config  # noqa: E402
from pipeline.eval.lm_adapter import GoldFinchLM  # noqa: E402

SMALL = ["n_layer=12", "n_embd=512", "head_size=64", "ctx_len=512", "vocab_size=16384"]


class NoText:
    """The benchmark hands the adapter token ids directly; only the end-of-text id is read."""
    eot_id = 0


def workload(args) -> list:
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(1, 16384, (n,), generator=g).tolist()  # noqa: E731
    requests = []
    for d in range(args.docs):
        context = ids(args.context)
        for _ in range(args.choices):
            requests.append(((f"doc{d}", ""), context, ids(args.continuation)))
    return requests


def timed(lm: GoldFinchLM, requests: list) -> tuple[float, float, list, dict]:
    """(wall seconds, CPU seconds of this process, results, tokens fed) of one pass."""
    lm.stats.clear()
    w0, c0 = time.perf_counter(), time.process_time()
    out = lm._loglikelihood_tokens(requests)
    return time.perf_counter() - w0, time.process_time() - c0, out, dict(lm.stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="goldfinch", choices=["goldfinch", "finch", "llama"])
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--choices", type=int, default=4)
    parser.add_argument("--context", type=int, default=160)
    parser.add_argument("--continuation", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="model config overrides (default: L12 D512, "
                                                     "vocab 16384)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(load_model_config(None, [f"arch={args.arch}", *SMALL, *args.overrides])).eval()
    requests = workload(args)
    lms = {share: GoldFinchLM(model, NoText(), args.batch_size, share_context=share)
           for share in (True, False)}
    rows = {share: [] for share in lms}
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both
        for share, lm in lms.items():
            rows[share].append(timed(lm, requests))
    best = {share: (min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2], runs[0][3])
            for share, runs in rows.items()}
    diff = max(abs(a[0] - b[0]) for a, b in zip(best[True][2], best[False][2]))
    cfg = model.cfg
    report = {"arch": args.arch, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
              "vocab_size": cfg.vocab_size, "requests": len(requests), "docs": args.docs,
              "choices": args.choices, "context_tokens": args.context,
              "continuation_tokens": args.continuation, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "machine": platform.machine(),
              "shared_s": best[True][0], "per_request_s": best[False][0],
              "speedup": best[False][0] / best[True][0],
              "shared_cpu_s": best[True][1], "per_request_cpu_s": best[False][1],
              "cpu_speedup": best[False][1] / best[True][1],
              "shared_tokens_fed": best[True][3], "per_request_tokens_fed": best[False][3],
              "max_abs_loglikelihood_diff": diff}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
