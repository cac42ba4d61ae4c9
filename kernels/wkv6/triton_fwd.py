"""WKV6 forward in Triton: a sequential pass over chunks for the states, then every chunk at once.

Inputs are [B, T, H, X] (row stride H*X); states are [B, H, N, K, V] fp32 with N = ceil(T / C).
1. `chunk_states_fwd`, grid (K/BK, V/BV, B*H): walks the N chunks of one head in order, keeping a
   [BK, BV] block of the state in registers, and stores the state entering every chunk:
       S <- exp(a_tot) * S + (k * exp(a_rev))^T v        (one tl.dot per chunk)
2. `chunk_outputs_fwd`, grid (V/BV, N, B*H): one chunk per program, independent of the others. It
   starts from the stored entering state and scans the chunk in sub-chunks of BC = 16 rows:
       y = (r * exp(b_ex)) S + P v,   P = intra-sub-chunk pair scores (+ bonus on the diagonal)
   then carries S across the sub-chunk, so pair terms are only ever formed inside 16 rows.
H and T are runtime arguments (one compiled kernel serves every model width and length).
"""
import triton
import triton.language as tl

from .triton_tiles import decays_and_scores, mm, tile_log_decays


@triton.jit
def chunk_states_fwd(k_ptr, v_ptr, w_ptr, s0_ptr, states_ptr, final_ptr, T, H,
                     K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                     BK: tl.constexpr, BV: tl.constexpr, HAS_S0: tl.constexpr, PREC: tl.constexpr):
    """Entering state of every chunk (and the final state) for one [BK, BV] block of one head."""
    pk, pv, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = pk * BK + tl.arange(0, BK)
    cv = pv * BV + tl.arange(0, BV)
    rows = tl.arange(0, C)
    k_base = k_ptr + (b * T * H + h) * K
    w_base = w_ptr + (b * T * H + h) * K
    v_base = v_ptr + (b * T * H + h) * V
    block = ck[:, None] * V + cv[None, :]
    if HAS_S0:
        s = tl.load(s0_ptr + bh * K * V + block).to(tl.float32)
    else:
        s = tl.zeros((BK, BV), dtype=tl.float32)
    for n in range(n_chunks):
        tl.store(states_ptr + (bh * n_chunks + n) * K * V + block, s)
        t = n * C + rows
        valid = (t < T)[:, None]
        kw_off = t[:, None] * (H * K) + ck[None, :]
        k = tl.load(k_base + kw_off, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(w_base + kw_off, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_base + t[:, None] * (H * V) + cv[None, :], mask=valid, other=0.0)
        b_ex, a_in, a_rev, a_tot = tile_log_decays(w, valid)
        s = s * tl.exp(a_tot)[:, None] + mm(tl.trans(k * tl.exp(a_rev)), v.to(tl.float32), PREC)
    tl.store(final_ptr + bh * K * V + block, s)


@triton.jit
def chunk_outputs_fwd(r_ptr, k_ptr, v_ptr, w_ptr, u_ptr, states_ptr, y_ptr, T, H,
                      K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                      BC: tl.constexpr, BV: tl.constexpr, HAS_U: tl.constexpr, PREC: tl.constexpr):
    """y for one chunk and one block of value channels, from the state entering the chunk."""
    pv, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = tl.arange(0, K)
    cv = pv * BV + tl.arange(0, BV)
    sub = tl.arange(0, BC)
    base_k = (b * T * H + h) * K
    base_v = (b * T * H + h) * V
    s = tl.load(states_ptr + (bh * n_chunks + n) * K * V + ck[:, None] * V + cv[None, :])
    for i in range(C // BC):
        t0 = n * C + i * BC
        t = t0 + sub
        valid = (t < T)[:, None]
        kw_off = base_k + t[:, None] * (H * K) + ck[None, :]
        v_off = base_v + t[:, None] * (H * V) + cv[None, :]
        r = tl.load(r_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
        row0 = base_k + t0 * (H * K) + ck
        b_ex, a_in, a_rev, a_tot, p = decays_and_scores(
            r, k, w, valid, k_ptr + row0, w_ptr + row0, H * K, T - t0, ck, u_ptr + h * K + ck,
            HAS_U, BC)
        y = mm(r * tl.exp(b_ex), s, PREC) + mm(p, v, PREC)
        tl.store(y_ptr + v_off, y.to(y_ptr.dtype.element_ty), mask=valid)
        s = s * tl.exp(a_tot)[:, None] + mm(tl.trans(k * tl.exp(a_rev)), v, PREC)
