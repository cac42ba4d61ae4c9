"""WKV7 forward in Triton: one program per (value tile, batch x head) walks the chunks in order.

The program keeps a [K, BV] block of the state in registers; per chunk of C = 16 tokens it builds
the WY pieces (triton_chunk), solves for the removed values u, writes y and steps the state:
    u = (I - A_ab)^{-1} (ã S + A_ak v),  y = r̃ S + A_rb u + A_rk v,  S <- e^{gc} S + b̂^T u + k̂^T v
The key-side pieces do not depend on the value tile, so each tile rebuilds them (no cross-program
traffic). With STORE_STATES it also stores the state entering every chunk ([B, H, N, K, K] fp32),
which the backward reads; WRITE_Y=False skips y when the backward recomputes those states.
H and T are runtime arguments (one compiled kernel serves every model width and length).
"""
import triton
import triton.language as tl

from ..wkv6.triton_tiles import mm
from .triton_chunk import chunk_factors, load_chunk, pair_matrices, unit_lower_inverse


@triton.jit
def wkv7_fwd_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, s0_ptr, y_ptr, states_ptr,
                    final_ptr, T, H, K: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
                    PREC: tl.constexpr, LD_MIN: tl.constexpr, HAS_S0: tl.constexpr,
                    STORE_STATES: tl.constexpr, WRITE_Y: tl.constexpr):
    """y for one value tile of one head, the final state, and optionally the entering states."""
    pv, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b_idx, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = tl.arange(0, K)
    cv = pv * BV + tl.arange(0, BV)
    rows = tl.arange(0, C)
    base = (b_idx * T * H + h) * K
    block = ck[:, None] * K + cv[None, :]
    if HAS_S0:
        s = tl.load(s0_ptr + bh * K * K + block).to(tl.float32)
    else:
        s = tl.zeros((K, BV), dtype=tl.float32)
    for n in range(n_chunks):
        if STORE_STATES:
            tl.store(states_ptr + (bh * n_chunks + n) * K * K + block, s)
        t = n * C + rows
        valid = (t < T)[:, None]
        r, w, k, a, b, v = load_chunk(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, v_ptr, base, t, valid,
                                      ck, cv, H * K)
        rt, at, bt, kt, decay, g, ld = chunk_factors(r, w, k, a, b, valid, LD_MIN)
        a_ab, a_ak, a_rb, a_rk = pair_matrices(rt, at, bt, kt, C, PREC)
        u = mm(unit_lower_inverse(a_ab, C), mm(at, s, PREC) + mm(a_ak, v, PREC), "ieee")
        if WRITE_Y:
            y = mm(rt, s, PREC) + mm(a_rb, u, PREC) + mm(a_rk, v, PREC)
            tl.store(y_ptr + base + t[:, None] * (H * K) + cv[None, :],
                     y.to(y_ptr.dtype.element_ty), mask=valid)
        s = decay[:, None] * (s + mm(tl.trans(bt), u, PREC) + mm(tl.trans(kt), v, PREC))
    tl.store(final_ptr + bh * K * K + block, s)
