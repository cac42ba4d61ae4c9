"""The parts of `benchmarks/gpu_check.py`, each run in a child process: `run_child(part, ...)`.

Results are printed as tagged JSON lines for the parent; a part raises to fail, and a missing
package (ModuleNotFoundError) turns into a `skipped` line naming it.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "@@gpu_check "


def bench_helpers():
    """benchmarks/kernels.py as a module (its name clashes with the `kernels` package)."""
    if "kernels_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("kernels_bench",
                                                      Path(__file__).with_name("kernels.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["kernels_bench"] = module
        spec.loader.exec_module(module)
    return sys.modules["kernels_bench"]


def emit(**record) -> None:
    """A result line for the parent (children only)."""
    print(TAG + json.dumps(record), flush=True)


def sizes(smoke: bool) -> dict:
    if smoke:
        return dict(correct=[(1, 40, 2, 16)], speed=(1, 64, 2, 16), repeats=2, ce=(64, 32, 512),
                    t_correct=40)
    return dict(correct=[(2, 1000, 4, 64), (2, 1000, 4, 128)], speed=(8, 4096, 32, 64), repeats=20,
                ce=(8 * 4096, 2048, 65536), t_correct=1000)


def part_compile(device: str, smoke: bool) -> None:
    """The first launch of each variant compiles it; do that for all of them at once, at B = 1
    but with the T and H of the later parts (Triton specialises on T and H divisible by 16)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp
    sz = sizes(smoke)
    jobs = [(dt, kk, u, s0, t, h) for dt in ("bfloat16", "float32")
            for (_, t, h, kk) in sz["correct"] for u in (False, True) for s0 in (False, True)]
    _, t, h, kk = sz["speed"]
    jobs += [("bfloat16", kk, u, False, t, h) for u in (False, True)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1), mp.get_context("spawn")) as pool:
        list(pool.map(_compile_one, [(device, *j) for j in jobs]))
    emit(variants=len(jobs), seconds=round(time.perf_counter() - t0, 1))


def _compile_one(job) -> None:
    import torch
    from kernels import wkv6
    device, dtype, kk, bonus, with_state, t, h = job
    args = _wkv6_inputs(1, t, h, kk, getattr(torch, dtype), device, bonus, with_state)
    y, s = wkv6(*args, backend="triton")
    (y.float().sum() + s.sum()).backward()


def _wkv6_inputs(b, t, h, kk, dtype, device, bonus, with_state, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    r, k, v, w = mk(b, t, h, kk), mk(b, t, h, kk) * 0.3, mk(b, t, h, kk), mk(b, t, h, kk) * 0.5 - 1.5
    xs = [x.to(device, dtype) for x in (r, k, v, w)]
    xs.append(mk(h, kk).to(device) if bonus else None)
    xs.append(mk(b, h, kk, kk).to(device) if with_state else None)
    return [None if x is None else x.requires_grad_() for x in xs]


def part_wkv6_correct(device: str, smoke: bool) -> None:
    import torch
    from kernels import wkv6
    names = ("y", "final_state", "dr", "dk", "dv", "dw", "du", "dstate")
    tol = {"float32": 1e-3, "bfloat16": 5e-2}
    bad = 0
    combos = list(itertools.product((torch.bfloat16, torch.float32), (True, False), (True, False)))
    if smoke:  # bf16 with bonus and state, fp32 with neither
        combos = [c for c in combos if c[1] == c[2] == (c[0] == torch.bfloat16)]
    for (b, t, h, kk), (dtype, bonus, with_state) in itertools.product(sizes(smoke)["correct"],
                                                                       combos):
        args = _wkv6_inputs(b, t, h, kk, dtype, device, bonus, with_state, seed=kk)
        got = _outputs_and_grads(lambda *a: wkv6(*a, backend="triton"), args)
        as64 = [None if a is None else a.detach().double().requires_grad_() for a in args]
        want = _outputs_and_grads(lambda *a: wkv6(*a, backend="torch"), as64)
        live = [n for n, a in zip(names, [0, 0, *args]) if a is not None]
        errs = {}
        for name, x, ref in zip(live, got, want):
            scale = max(1.0, ref.abs().max().item())
            errs[name] = (x.double() - ref).abs().max().item() / scale
        name = str(dtype)[6:]
        ok = all(e <= tol[name] for e in errs.values())
        bad += not ok
        emit(dtype=name, K=kk, T=t, u=bonus, state=with_state, ok=ok, tol=tol[name],
             max_scaled_err={k: float(f"{e:.3g}") for k, e in errs.items()})
    if bad:
        raise AssertionError(f"{bad} WKV6 configurations outside tolerance")


def _outputs_and_grads(fn, args):
    import torch
    y, s = fn(*args)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=g).to(y.device, y.dtype)
    gs = torch.randn(s.shape, generator=g).to(s.device, s.dtype)
    live = [a for a in args if a is not None]
    return [y, s, *torch.autograd.grad((y * gy).sum() + (s * gs).sum(), live)]


def median_ms(fn, repeats: int, device: str, warm: int) -> float:
    """Median milliseconds of fn() after `warm` calls (CUDA events on GPU)."""
    import statistics
    import torch
    for _ in range(warm):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _time_wkv6(contenders: dict, device: str, smoke: bool) -> None:
    import torch
    fwd_bwd, wkv6_flops = bench_helpers().fwd_bwd, bench_helpers().wkv6_flops
    b, t, h, kk = sizes(smoke)["speed"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    for bonus in (False, True):
        args = _wkv6_inputs(b, t, h, kk, dtype, device, bonus, False)[:5]
        for name, fn in contenders.items():
            ms = median_ms(fwd_bwd(fn, args), sizes(smoke)["repeats"], device, 1 if smoke else 3)
            emit(impl=name, u=bonus, B=b, T=t, H=h, K=kk, dtype=str(dtype)[6:], ms=round(ms, 3),
                 tflops=round(wkv6_flops(b, t, h, kk, kk) / ms / 1e9, 3))


def part_wkv6_speed(device: str, smoke: bool) -> None:
    from kernels import wkv6
    _time_wkv6({"triton": lambda *a: wkv6(*a, backend="triton"),
                "torch chunked": lambda *a: wkv6(*a, backend="torch")}, device, smoke)


def part_wkv6_fla(device: str, smoke: bool) -> None:
    fla_chunk_rwkv6 = bench_helpers().fla_chunk_rwkv6
    fla = fla_chunk_rwkv6()
    if fla is None:
        import fla as _  # noqa: F401  (raises the real import error)
        raise ImportError("fla is importable but has no fla.ops.rwkv6.chunk_rwkv6")
    _time_wkv6({"fla chunk_rwkv6": fla}, device, smoke)


def fla_chunk_rwkv7():
    """flash-linear-attention's chunk_rwkv7 (scale 1, log-decay -exp(w)) on our wkv7 contract,
    or None where fla (or that function) is not importable."""
    import inspect

    import torch
    try:
        from fla.ops.rwkv7 import chunk_rwkv7
    except Exception:
        return None
    params = inspect.signature(chunk_rwkv7).parameters
    decay = "log_w" if "log_w" in params else "w"

    def call(r, w, k, v, a, b, state=None):
        log_w = -torch.exp(w.float()).to(r.dtype)
        return chunk_rwkv7(r=r, k=k, v=v, a=a, b=b, scale=1.0, initial_state=state,
                           output_final_state=True, **{decay: log_w})
    return call


def _wkv7_inputs(b, t, h, kk, dtype, device, seed=0):
    """RWKV-7-shaped inputs: decays in (0.545, 1), a = -kk, b = kk * alpha, |kk| = 1."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    r, k, v = mk(b, t, h, kk), mk(b, t, h, kk), mk(b, t, h, kk)
    w = torch.log(0.6065 * torch.sigmoid(mk(b, t, h, kk) * 2))
    unit = F.normalize(mk(b, t, h, kk), dim=-1)
    alpha = torch.rand(b, t, h, kk, generator=g)
    return [x.to(device, dtype).requires_grad_() for x in (r, w, k, v, -unit, unit * alpha)]


def part_wkv7(device: str, smoke: bool) -> None:
    """WKV7 fwd+bwd timing: Triton vs the torch chunked path (and fla's chunk_rwkv7 where it
    imports), with the largest gradient difference of Triton against torch at that size."""
    import torch

    from kernels import wkv7
    fwd_bwd = bench_helpers().fwd_bwd
    b, t, h, kk = sizes(smoke)["speed"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    args = _wkv7_inputs(b, t, h, kk, dtype, device)
    contenders = {"triton": lambda *a: wkv7(*a, backend="triton"),
                  "torch chunked": lambda *a: wkv7(*a, backend="torch")}
    if fla_chunk_rwkv7() is not None:
        contenders["fla chunk_rwkv7"] = fla_chunk_rwkv7()
    else:
        emit(wkv7_impl="fla chunk_rwkv7", ms=None, note="fla not importable")
    grads = {}
    for name, fn in contenders.items():
        ms = median_ms(fwd_bwd(fn, args), sizes(smoke)["repeats"], device, 1 if smoke else 3)
        emit(wkv7_impl=name, B=b, T=t, H=h, K=kk, dtype=str(dtype)[6:], ms=round(ms, 3))
        if name != "fla chunk_rwkv7":
            grads[name] = [x.grad.float().clone() for x in args]
    diff = max(((g - ref).abs().max() / ref.abs().max().clamp(min=1)).item()
               for g, ref in zip(grads["triton"], grads["torch chunked"]))
    emit(wkv7_check="triton vs torch chunked", max_scaled_grad_diff=round(diff, 5))


def part_fused_ce(device: str, smoke: bool) -> None:
    import torch
    ce_problem, ce_step = bench_helpers().ce_problem, bench_helpers().ce_step
    n, d, vocab = sizes(smoke)["ce"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    hidden, weight, targets = ce_problem(n, d, vocab, dtype, device)
    losses = {}
    for kind in ("plain", "fused"):
        hidden.grad = weight.grad = None
        peak = None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        losses[kind] = ce_step(kind, hidden, weight, targets, None)
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        emit(kind=kind, N=n, D=d, vocab=vocab, dtype=str(dtype)[6:], loss=round(losses[kind], 5),
             ms=round((time.perf_counter() - t0) * 1e3, 1), peak_bytes=peak)
    if abs(losses["fused"] - losses["plain"]) > 1e-2 * max(1.0, abs(losses["plain"])):
        raise AssertionError(f"fused CE loss {losses['fused']} != plain {losses['plain']}")


def part_train_l24(device: str, smoke: bool, out: Path, lower: str | None = None) -> None:
    import shutil
    import tempfile
    from pipeline_helpers import make_data_dir
    work = Path(tempfile.mkdtemp(prefix="gpu_check_train_"))
    try:
        steps = 3 if smoke else 20
        make_data_dir(work / "data", docs_per_shard=(60,) if smoke else (400,), val_docs=(60,))
        cmd = train_command(work, steps, smoke) + ([f"model.lower={lower}"] if lower else [])
        metrics = work / "runs" / "gpu-check" / "metrics.jsonl"
        name = "train_l24" + (f"_{lower}" if lower else "")
        rows = _run_until_steps(cmd, metrics, steps, out / f"{name}_trainer.log")
        shutil.copy(metrics, out / f"{name}_metrics.jsonl")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tail = rows[min(3, len(rows) - 1):]  # the first steps include compilation and warm-up
    mean = lambda key: (sum(r[key] for r in tail) / len(tail)  # noqa: E731
                        if all(r.get(key) is not None for r in tail) else None)
    emit(steps=len(rows), tokens_per_s=mean("tokens_per_s"), mfu=mean("mfu"),
         loss_first=rows[0]["loss"], loss_last=rows[-1]["loss"])


def part_train_l24_gf7(device: str, smoke: bool, out: Path) -> None:
    """GoldFinch-7 at the same size and settings: the RWKV-7 blocks through the Triton WKV7."""
    part_train_l24(device, smoke, out, lower="rwkv7")


def train_command(work: Path, steps: int, smoke: bool) -> list[str]:
    """The trainer's command line: the L24-D2048 GPU config on one GPU, no accumulation, nothing
    saved or tracked (smoke: a toy model on CPU)."""
    common = [f"data.path={work / 'data'}", f"train.out_dir={work / 'runs'}",
              "train.run_name=gpu-check", f"train.max_steps={steps}", "train.global_batch=0",
              "train.grad_accum=1", "train.save_every=0", "train.val_every=0", "train.export=false",
              "train.log_every=1", "tracking.enabled=false", "train.warmup_steps=2"]
    if smoke:
        model = ["model.n_layer=3", "model.n_embd=64", "model.head_size=16", "model.ctx_len=32",
                 "train.micro_batch=2", "train.fused_ce=false"]
        return [sys.executable, "-m", "pipeline.train", *common, *model]
    return [sys.executable, "-m", "pipeline.train", "--config",
            str(ROOT / "configs" / "train" / "L24-D2048-gpu.yaml"), *common,
            "model.vocab_size=65536", "train.micro_batch=4"]


def _run_until_steps(cmd, metrics: Path, steps: int, log: Path) -> list[dict]:
    """Run the trainer until metrics.jsonl holds `steps` rows, then stop it (its final checkpoint
    would only cost disk time); returns the rows."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
        rows: list[dict] = []
        while proc.poll() is None:
            time.sleep(1)
            rows = _read_rows(metrics)
            if len(rows) >= steps:
                proc.kill()
                break
        proc.wait()
    rows = _read_rows(metrics)
    if len(rows) < steps:
        raise RuntimeError(f"the trainer exited with {proc.returncode} after {len(rows)} of "
                           f"{steps} steps; see {log.name}")
    return rows[:steps]


def _read_rows(metrics: Path) -> list[dict]:
    if not metrics.is_file():
        return []
    rows = []
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if "loss" in row:
            rows.append(row)
    return rows


def run_child(part: str, out: Path, smoke: bool) -> int:
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fn = globals()[f"part_{part}"]
    try:
        fn(device, smoke, out) if part.startswith("train_l24") else fn(device, smoke)
    except ModuleNotFoundError as err:
        emit(status="skipped", reason=f"missing package: {err.name}")
        return 0
    return 0
