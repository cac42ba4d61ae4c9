"""Kernel benchmarks: WKV6 forward+backward time and fused-CE peak memory, side by side.

    python benchmarks/kernels.py [--device auto|cuda|cpu] [--repeats 5]

On CUDA: WKV6 Triton vs the chunked torch path (and flash-linear-attention's chunk_rwkv6 when
`fla` is importable) at B=8, T=4096, H=32, K=V=64, bf16; fused linear+CE vs plain CE at
N=8x4096 tokens, D=2048, vocab 65,536, bf16 (peak CUDA memory and time).
Without CUDA: a small CPU variant (chunked torch vs the naive loop for WKV6 and WKV7; fused vs
plain CE peak RSS, each measured in a fresh subprocess) -- the GPU numbers need a GPU.
"""
from __future__ import annotations

import argparse
import inspect
import os
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from gpu_check_parts import median_ms  # noqa: E402  (one timer for both GPU benchmarks)
import _repo_path  # noqa: E402,F401  (first: the `kernels` package, not this file)
from kernels import fused_linear_cross_entropy, wkv6, wkv7  # noqa: E402


def wkv6_flops(b: int, t: int, h: int, kk: int, vv: int) -> float:
    """Nominal fwd+bwd FLOPs: the recurrence's 4*K*V per token and head (state update + read),
    with the backward counted as twice the forward."""
    return 3 * 4 * b * t * h * kk * vv


def wkv6_inputs(b, t, h, kk, dtype, device, bonus):
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    r, k, v = mk(b, t, h, kk), mk(b, t, h, kk) * 0.2, mk(b, t, h, kk)
    w = (mk(b, t, h, kk) * 0.5 - 2.0)
    u = mk(h, kk).float() if bonus else None
    return [x.requires_grad_() if x is not None else None for x in (r, k, v, w, u)]


def fwd_bwd(fn, args):
    """One forward and backward through fn(*args) -> (y, final_state)."""
    def step():
        for a in args:
            if a is not None:
                a.grad = None
        y, s = fn(*args)
        (y.float().sum() + s.sum()).backward()
    return step


def fla_chunk_rwkv6():
    """flash-linear-attention's chunk_rwkv6 wrapped to our (r, k, v, w, u) contract, or None."""
    try:
        from fla.ops.rwkv6 import chunk_rwkv6
    except Exception:
        return None
    layout = {"head_first": False} if "head_first" in inspect.signature(chunk_rwkv6).parameters else {}

    def call(r, k, v, w, u):
        uu = u if u is not None else torch.zeros(r.shape[2], r.shape[3], device=r.device)
        return chunk_rwkv6(r, k, v, -torch.exp(w.float()).to(r.dtype), uu.to(r.dtype), scale=1.0,
                           output_final_state=True, **layout)
    return call


def bench_wkv6(device: str, repeats: int) -> None:
    if device == "cuda":
        b, t, h, kk, dtype = 8, 4096, 32, 64, torch.bfloat16
        contenders = {"triton": lambda *a: wkv6(*a, backend="triton"),
                      "torch chunked": lambda *a: wkv6(*a, backend="torch")}
        if fla_chunk_rwkv6() is not None:
            contenders["fla chunk_rwkv6"] = fla_chunk_rwkv6()
    else:
        b, t, h, kk, dtype = 1, 512, 4, 64, torch.float32
        contenders = {"torch chunked": lambda *a: wkv6(*a, backend="torch"),
                      "naive loop": lambda *a: wkv6(*a, backend="naive")}
    flops = wkv6_flops(b, t, h, kk, kk)
    print(f"## WKV6 forward+backward, B={b} T={t} H={h} K=V={kk} {str(dtype)[6:]} on {device}")
    for bonus in (False, True):
        args = wkv6_inputs(b, t, h, kk, dtype, device, bonus)
        base = None
        for name, fn in contenders.items():
            try:
                sec = median_ms(fwd_bwd(fn, args), repeats, device, warm=1) / 1e3
            except Exception as err:  # a contender that cannot run here is reported, not fatal
                print(f"  {name:>16}  u={'yes' if bonus else 'no ':3}  failed: "
                      f"{type(err).__name__}: {err}")
                continue
            base = base or sec
            print(f"  {name:>16}  u={'yes' if bonus else 'no ':3}  {sec * 1e3:10.2f} ms  "
                  f"x{sec / base:6.2f} vs first  {flops / sec / 1e12:8.3f} TFLOP/s")


def wkv7_inputs(b, t, h, kk):
    """RWKV-7-shaped fp32 inputs: decay in (0.545, 1), a = -kk, b = kk * alpha, |kk| = 1."""
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    unit = F.normalize(mk(b, t, h, kk), dim=-1)
    w = torch.log(0.6065 * torch.sigmoid(mk(b, t, h, kk)))
    seq = (mk(b, t, h, kk), w, mk(b, t, h, kk), mk(b, t, h, kk), -unit, unit * torch.rand(b, t, h, kk))
    return [x.requires_grad_() for x in (*seq, mk(b, h, kk, kk))]


def bench_wkv7_cpu(repeats: int) -> None:
    """Chunked torch vs the naive loop on CPU (there is no Triton WKV7 yet)."""
    b, t, h, kk = 2, 512, 4, 64
    args = wkv7_inputs(b, t, h, kk)
    print(f"## WKV7 forward+backward, B={b} T={t} H={h} K=V={kk} float32 on cpu")
    ms = {}
    for name in ("torch", "naive"):
        step = fwd_bwd(lambda *a, n=name: wkv7(*a, backend=n), args)
        ms[name] = median_ms(step, repeats, "cpu", warm=1)
        print(f"  {name:>16}  {ms[name]:10.2f} ms")
    print(f"  naive / torch chunked: x{ms['naive'] / ms['torch']:.2f}")


def ce_problem(n, d, vocab, dtype, device):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(n, d, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(vocab, d, generator=g) / d ** 0.5).to(device, dtype).requires_grad_()
    return hidden, weight, torch.randint(0, vocab, (n,), generator=g).to(device)


def ce_step(kind: str, hidden, weight, targets, chunk):
    if kind == "fused":
        loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk)
    else:
        loss = F.cross_entropy((hidden @ weight.t()).float(), targets)
    loss.backward()
    return loss.item()


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ce_worker(kind: str, n: int, d: int, vocab: int, chunk: int | None) -> None:
    """Runs in a fresh process: prints seconds and the peak RSS growth of one CE fwd+bwd."""
    hidden, weight, targets = ce_problem(n, d, vocab, torch.float32, "cpu")
    before = rss_bytes()
    t0 = time.perf_counter()
    loss = ce_step(kind, hidden, weight, targets, chunk)
    sec = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(f"{sec} {peak} {loss}")


def bench_ce(device: str) -> None:
    if device == "cuda":
        n, d, vocab, dtype = 8 * 4096, 2048, 65536, torch.bfloat16
        print(f"## linear + cross-entropy fwd+bwd, N={n} D={d} vocab={vocab} {str(dtype)[6:]} on cuda")
        hidden, weight, targets = ce_problem(n, d, vocab, dtype, device)
        rows = {}
        for kind in ("plain", "fused"):
            hidden.grad = weight.grad = None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            loss = ce_step(kind, hidden, weight, targets, None)
            torch.cuda.synchronize()
            rows[kind] = (time.perf_counter() - t0, torch.cuda.max_memory_allocated() - base, loss)
    else:
        n, d, vocab, chunk = 2048, 128, 65536, 256
        print(f"## linear + cross-entropy fwd+bwd, N={n} D={d} vocab={vocab} fp32 on cpu "
              f"(fused chunk {chunk} rows; peak RSS growth, each in a fresh process)")
        rows = {}
        for kind in ("plain", "fused"):
            out = subprocess.run([sys.executable, __file__, "--ce-worker", kind, str(n), str(d),
                                  str(vocab), str(chunk)], capture_output=True, text=True, check=True)
            sec, peak, loss = out.stdout.split()[-3:]
            rows[kind] = (float(sec), int(peak), float(loss))
    for kind, (sec, peak, loss) in rows.items():
        print(f"  {kind:>6} CE  loss {loss:.5f}  {sec * 1e3:9.1f} ms  peak +{peak / 2**20:9.1f} MiB")
    print(f"  fused / plain peak memory: {rows['fused'][1] / max(rows['plain'][1], 1):.3f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ce-worker":
        kind, n, d, vocab, chunk = sys.argv[2:7]
        ce_worker(kind, int(n), int(d), int(vocab), int(chunk))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    machine = (torch.cuda.get_device_name() if device == "cuda"
               else platform.processor() or platform.machine())
    print(f"# kernels benchmark on {device}: torch {torch.__version__}, {machine}, "
          f"{torch.get_num_threads()} CPU threads")
    if device == "cpu":
        print("# no CUDA here: small CPU variant; the Triton timings and B=8 T=4096 numbers need a GPU")
    bench_wkv6(device, args.repeats)
    if device == "cpu":
        bench_wkv7_cpu(args.repeats)
    bench_ce(device)


if __name__ == "__main__":
    main()
