"""Compile every Triton kernel variant the trainer and inference can launch, for a CUDA
architecture, on a machine without a GPU; report registers, spills and shared memory.

    python -m kernels.compile_check [--arch 90] [--json] [--head-sizes 16 32 64 128]
                                    [--dtypes bf16 fp32] [--chunk-sizes 64]
                                    [--lengths 4096 1000 1] [--kernels wkv6 wkv7 ce] [--jobs N]

The launches are not written out here: the real launch code (`kernels.wkv6.triton_autograd`,
`kernels.wkv7.triton_autograd`) runs with a recorder in place of the launcher, on CPU tensors of
the real dtypes (never touched), for every combination of bonus u (WKV6), initial state and
final-state gradient, forward and backward, and for each sequence length class Triton tells apart
(T a multiple of 16, not, and T = 1). Each
distinct call is then specialised exactly as Triton's launcher would (its own binder: pointer
alignment, integer divisibility, constexprs, num_warps) and compiled to a cubin with the ptxas
in the triton wheel. Registers and spills are read from that cubin with the wheel's
`cuobjdump -res-usage` (a CompiledKernel only knows them once loaded on a GPU): n_spills is the
per-thread local memory (stack frame) in bytes, what Triton reports as n_spills on a GPU, and
`barriers` counts the block-wide barriers in the PTX (each one a stall of every warp). Exits non-zero
when a kernel fails to compile or needs more shared memory than the architecture gives a block.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common.cli import command

# shared memory one block may use (opt-in maximum), bytes
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Triton specialises an integer argument on being 1 and on divisibility by 16: training lengths
# (a multiple of 16), any other pre-fill length, and one-token decoding compile differently
LENGTHS = (4096, 1000, 1)
H_LAUNCH = 4
FAMILIES = ("wkv6", "wkv7", "ce")


def recorded_launches(k_size: int, v_size: int, dtype_name: str, chunk: int,
                      t: int = LENGTHS[0]) -> list[dict]:
    """Every distinct kernel call of the WKV6 forward and backward for this shape, dtype and T."""
    import torch

    from .wkv6 import triton_autograd as ta
    from .wkv6.triton_plan import LaunchPlan

    dtype = getattr(torch, DTYPES[dtype_name])
    b, h = 1, H_LAUNCH
    r, k, w = (torch.empty(b, t, h, k_size, dtype=dtype) for _ in range(3))
    v = torch.empty(b, t, h, v_size, dtype=dtype)
    u = torch.empty(h, k_size)
    state = torch.empty(b, h, k_size, v_size)
    plan = LaunchPlan.make(h, k_size, v_size, dtype, chunk)
    calls: dict[tuple, dict] = {}

    def record(kernel, grid, *args, **consts):
        sig = tuple(str(a.dtype) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args)
        key = (kernel.__name__, sig, tuple(sorted(consts.items())))
        calls.setdefault(key, dict(kernel=kernel, args=args, consts=consts))

    for has_u, has_s0 in itertools.product((False, True), repeat=2):
        uu, s0 = (u if has_u else None), (state if has_s0 else None)
        ta.wkv6_forward(r, k, v, w, uu, s0, plan, launch=record)
        for has_dfinal in (False, True):
            ta.wkv6_backward(r, k, v, w, uu, s0, torch.empty_like(v),
                             state if has_dfinal else None, plan, launch=record)
    return list(calls.values())


def recorded_wkv7_launches(k_size: int, dtype_name: str, t: int = LENGTHS[0]) -> list[dict]:
    """Every distinct kernel call of the WKV7 forward and backward for this head size, dtype, T."""
    import torch

    from .wkv7 import triton_autograd as ta
    from .wkv7.triton_plan import LaunchPlan

    dtype = getattr(torch, DTYPES[dtype_name])
    inputs = [torch.empty(1, t, H_LAUNCH, k_size, dtype=dtype) for _ in range(6)]
    state = torch.empty(1, H_LAUNCH, k_size, k_size)
    plan = LaunchPlan.make(H_LAUNCH, k_size, dtype)
    calls: dict[tuple, dict] = {}

    def record(kernel, grid, *args, **consts):
        sig = tuple(str(a.dtype) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args)
        key = (kernel.__name__, sig, tuple(sorted(consts.items())))
        calls.setdefault(key, dict(kernel=kernel, args=args, consts=consts))

    for s0 in (None, state):
        ta.wkv7_forward(inputs, s0, plan, launch=record)
        for dfinal in (None, state):
            ta.wkv7_backward(inputs, s0, torch.empty_like(inputs[0]), dfinal, plan, launch=record)
    return list(calls.values())


def specialise(kernel, args, consts, target):
    """(ASTSource, options) as JITFunction.run would build them for these arguments."""
    from triton import knobs
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    kwargs = dict(consts)
    kwargs["debug"] = kernel.debug or knobs.runtime.debug
    for name in ("instrumentation_mode", "fpsan_homomorphic_casts"):
        if hasattr(knobs.compilation, name):
            kwargs[name] = getattr(knobs.compilation, name)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound,
                                                              specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), options


def resource_usage(cubin: bytes, name: str) -> dict:
    """REG, STACK and LOCAL of one function, from the wheel's cuobjdump."""
    import triton
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        text = subprocess.run([str(tool), "-res-usage", fh.name], capture_output=True, text=True,
                              check=True).stdout
    block = text[text.index(name):] if name in text else text
    usage = {key: int(val) for key, val in re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", block)[:4]}
    return usage


_JOBS: list[dict] = []  # filled before the worker processes fork, read by index in them


def compile_one(index: int) -> dict:
    """Compile one recorded call; the JSON line for it (with `error` when it failed)."""
    import triton
    from triton.backends.compiler import GPUTarget

    job = _JOBS[index]
    arch = job["arch"]
    line = {k: job[k] for k in ("kernel", "head_size", "value_size", "dtype", "chunk", "variant")}
    t0 = time.perf_counter()
    try:
        target = GPUTarget("cuda", arch, 32)
        src, options = specialise(job["fn"], job["args"], job["consts"], target)
        compiled = triton.compile(src, target=target, options=options.__dict__)
        usage = resource_usage(compiled.asm["cubin"], compiled.metadata.name)
        line.update(n_regs=usage.get("REG"), n_spills=usage.get("STACK", 0) + usage.get("LOCAL", 0),
                    shared_bytes=compiled.metadata.shared, num_warps=compiled.metadata.num_warps,
                    barriers=len(re.findall(r"\b(?:bar|barrier)\.sync\b", compiled.asm["ptx"])),
                    num_stages=compiled.metadata.num_stages)
        limit = SHARED_LIMIT.get(arch, 101376)
        if compiled.metadata.shared > limit:
            line["error"] = f"{compiled.metadata.shared} bytes of shared memory > {limit} on sm_{arch}"
    except Exception as err:  # report every failing kernel, not just the first
        line["error"] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    line["seconds"] = round(time.perf_counter() - t0, 1)
    return line


def _wkv_job(arch: int, call: dict, size: int, dtype_name: str, chunk: int, t: int) -> dict:
    consts = call["consts"]
    variant = " ".join([f"T={t}"] + [f"{k}={v}" for k, v in sorted(consts.items())
                                     if k not in ("K", "V", "C")])
    return dict(arch=arch, fn=call["kernel"], args=call["args"], consts=consts,
                kernel=call["kernel"].__name__, head_size=size, value_size=size,
                dtype=dtype_name, chunk=chunk, variant=variant)


def jobs_for(arch: int, head_sizes, dtype_names, chunks, lengths=LENGTHS,
             families=FAMILIES) -> list[dict]:
    from .wkv7.triton_plan import CHUNK as WKV7_CHUNK

    jobs = []
    for dtype_name, size, t in itertools.product(dtype_names, head_sizes, lengths):
        for chunk in chunks if "wkv6" in families else ():
            jobs += [_wkv_job(arch, call, size, dtype_name, chunk, t)
                     for call in recorded_launches(size, size, dtype_name, chunk, t)]
        if "wkv7" in families:
            jobs += [_wkv_job(arch, call, size, dtype_name, WKV7_CHUNK, t)
                     for call in recorded_wkv7_launches(size, dtype_name, t)]
    for dtype_name in dtype_names if "ce" in families else ():
        jobs.append(_ce_job(arch, dtype_name))
    return jobs


def _ce_job(arch: int, dtype_name: str) -> dict:
    import torch

    from .fused_ce import triton_ce
    calls = []
    triton_ce.ce_rows_triton(torch.empty(8, 65536, dtype=getattr(torch, DTYPES[dtype_name])),
                             torch.zeros(8, dtype=torch.long), torch.empty(8), -100, True,
                             launch=lambda kernel, grid, *a, **c: calls.append((kernel, a, c)))
    kernel, args, consts = calls[0]
    return dict(arch=arch, fn=kernel, args=args, consts=consts, kernel=kernel.__name__,
                head_size=None, value_size=None, dtype=dtype_name, chunk=None,
                variant=" ".join(f"{k}={v}" for k, v in sorted(consts.items())))


def run(arch: int, head_sizes, dtype_names, chunks, lengths, workers: int, as_json: bool,
        families=FAMILIES) -> int:
    from .triton_runtime import is_interpreted
    from .wkv6.triton_fwd import chunk_states_fwd

    if is_interpreted(chunk_states_fwd):
        print("kernels.compile_check: kernels were decorated for the interpreter: unset "
              "TRITON_INTERPRET and rerun", file=sys.stderr)
        return 2
    _JOBS[:] = jobs_for(arch, head_sizes, dtype_names, chunks, lengths, families)
    failed = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        for line in pool.map(compile_one, range(len(_JOBS))):
            failed += "error" in line
            if as_json:
                print(json.dumps(line), flush=True)
            else:
                status = "FAIL" if "error" in line else "ok  "
                print(f"{status} {line['kernel']:<22} {line['dtype']} K={line['head_size']} "
                      f"C={line['chunk']} {line['variant']}: regs {line.get('n_regs')} spills "
                      f"{line.get('n_spills')} shared {line.get('shared_bytes')}"
                      + (f"  {line['error']}" if "error" in line else ""), flush=True)
    return 1 if failed else 0


@command("kernels.compile_check")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80, 90")
    parser.add_argument("--head-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[64],
                        help="WKV6 chunk sizes (the trainer launches 64)")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS),
                        help="sequence lengths T: a multiple of 16, another, and 1 (decoding)")
    parser.add_argument("--kernels", nargs="+", choices=FAMILIES, default=list(FAMILIES),
                        help="kernel families: WKV6, WKV7, fused cross-entropy")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    parser.add_argument("--json", action="store_true", help="one JSON object per variant")
    args = parser.parse_args(argv)
    return run(args.arch, args.head_sizes, args.dtypes, args.chunk_sizes, args.lengths, args.jobs,
               args.json, tuple(args.kernels))


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("kernels.compile_check: unset TRITON_INTERPRET (with it Triton interprets, "
                 "never compiles)")
    sys.exit(main())
