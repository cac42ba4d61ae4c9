"""Compile every Triton kernel of this package for a CUDA architecture, without a GPU.

    python -m kernels.compile_check [--arch 90] [--head-sizes 64 128] [--dtypes bf16 fp32]

Runs Triton's full pipeline down to a cubin with the ptxas bundled in the triton wheel, using
the same launch plan (tile sizes, warps, dot precision) as the real launches. It catches what
the CPU interpreter cannot: unsupported ops or layouts, dot-shape limits, and shared memory
over the architecture's per-program limit. Prints one line per kernel; exits non-zero on error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
DTYPES = {"bf16": ("*bf16", "bfloat16"), "fp16": ("*fp16", "float16"), "fp32": ("*fp32", "float32")}


def _signature(fn, constexprs: dict, ints: tuple, pointer_types: dict) -> dict:
    """Triton signature: constexprs, i32 scalars, and typed pointers (fp32 unless named)."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ints:
            sig[name] = "i32"
        else:
            sig[name] = pointer_types.get(name, "*fp32")
    return sig


def _wkv6_jobs(head: int, dtype_name: str):
    """(kernel, constexprs with num_warps, i32 args, pointer types) for every WKV6 launch."""
    import torch

    from .wkv6 import triton_bwd as bwd
    from .wkv6 import triton_fwd as fwd
    from .wkv6.triton_plan import LaunchPlan

    ptr, torch_name = DTYPES[dtype_name]
    plan = LaunchPlan.make(32, head, head, getattr(torch, torch_name))
    inputs = {name: ptr for name in ("r_ptr", "k_ptr", "v_ptr", "w_ptr", "dy_ptr", "y_ptr",
                                     "dv_ptr", "dr_ptr", "dk_ptr", "dw_ptr")}
    b, t = 8, 4096
    return [
        (fwd.chunk_states_fwd, plan.state_pass(b, HAS_S0=True)[1], ("T",), inputs),
        (fwd.chunk_outputs_fwd, plan.full_k(b, t, has_u=True)[1], ("T",), inputs),
        (bwd.chunk_state_grads_bwd, plan.state_pass(b, HAS_DFINAL=True)[1], ("T",), inputs),
        (bwd.chunk_value_grads_bwd, plan.full_k(b, t, has_u=True)[1], ("T",), inputs),
        (bwd.chunk_rk_grads_bwd, plan.full_v(b, t)[1], ("T",), inputs),
        (bwd.decay_bonus_grads_bwd, plan.decay(b, t, has_u=True)[1], ("T",), inputs),
    ]


def _ce_jobs(dtype_name: str):
    from .fused_ce.triton_ce import ce_rows_kernel
    ptrs = {"logits_ptr": DTYPES[dtype_name][0], "targets_ptr": "*i64"}
    return [(ce_rows_kernel, dict(BLOCK=4096, WRITE_GRAD=True, num_warps=8),
             ("row_stride", "n_vocab", "ignore_index"), ptrs)]


def compile_all(arch: int, head_sizes, dtype_names) -> list[str]:
    """Compile every job; returns the error lines (empty when everything compiled and fits)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .triton_runtime import is_interpreted
    from .wkv6.triton_fwd import chunk_states_fwd

    if is_interpreted(chunk_states_fwd):
        return ["kernels were decorated for the interpreter: unset TRITON_INTERPRET and rerun"]
    target = GPUTarget("cuda", arch, 32)
    jobs = [job for d in dtype_names for hs in head_sizes for job in _wkv6_jobs(hs, d)]
    jobs += [job for d in dtype_names for job in _ce_jobs(d)]
    errors = []
    for fn, consts, ints, ptrs in jobs:
        consts = dict(consts)
        warps = consts.pop("num_warps")
        label = f"{fn.__name__} {ptrs.get('r_ptr', ptrs.get('logits_ptr'))} " + " ".join(
            f"{k}={v}" for k, v in consts.items() if k not in ("H", "PREC"))
        t0 = time.perf_counter()
        try:
            src = ASTSource(fn, _signature(fn, consts, ints, ptrs), consts)
            shared = triton.compile(src, target=target, options={"num_warps": warps}).metadata.shared
        except Exception as err:  # report every failing kernel, not just the first
            first_line = (str(err).splitlines() or [""])[0]
            errors.append(f"{label}: {type(err).__name__}: {first_line}")
            print(f"FAIL {label}", flush=True)
            continue
        limit = SHARED_LIMIT.get(arch, 99 * 1024)
        status = "ok  " if shared <= limit else "FAIL"
        if shared > limit:
            errors.append(f"{label}: {shared} bytes of shared memory > {limit} on sm_{arch}")
        print(f"{status} {label}  shared {shared / 1024:.0f} KiB  {time.perf_counter() - t0:.1f} s",
              flush=True)
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80, 86, 90")
    parser.add_argument("--head-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    args = parser.parse_args()
    errors = compile_all(args.arch, args.head_sizes, args.dtypes)
    for line in errors:
        print("error:", line, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("kernels.compile_check: unset TRITON_INTERPRET (with it Triton interprets, "
                 "never compiles)")
    sys.exit(main())
