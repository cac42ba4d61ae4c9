"""WKV6 backward in Triton, mirroring the forward (whose entering states are recomputed first).

With dS the gradient of a state, the chunk recurrence S' = exp(a_tot) S + (k e^{a_rev})^T v runs
backwards as dS = exp(a_tot) dS' + (r e^{b_ex})^T dy. The kernels:
1. `chunk_state_grads_bwd`, grid (K/BK, V/BV, B*H): reverse pass over chunks; stores the gradient
   of the state *leaving* each chunk and returns the initial-state gradient.
2. `chunk_value_grads_bwd`, grid (V/BV, N, B*H): dv per chunk, scanning its sub-chunks backwards.
3. `chunk_rk_grads_bwd`, grid (K/BK, N, B*H): dr (forward sub-chunk scan from the entering state)
   and dk (backward scan from the leaving-state gradient), both without the bonus term.
4. `decay_bonus_grads_bwd`, grid (K/BK, N, B*H): w enters only through the cumulative log-decay
   G, and dL/dG_j = r_{j+1} dr_{j+1} - k_j dk_j (bonus excluded), plus sum_v dS_T S_T at the end.
   So dL/d(ld_j) = sum_{t>j} r_t dr_t - sum_{t>=j} k_t dk_t + sum_v dS_T S_T, and dw = dL/d(ld) * ld
   since ld = -exp(w). Everything past chunk n sums to the product form sum_v dS_{n+1} S_{n+1}
   (state leaving chunk n and its gradient; kernel 3 stores it), so the reverse cumulative sum
   only runs inside a chunk: no pass over T, and no rounding error piling up along it. This
   kernel also adds the bonus terms to dr and dk and sums du per chunk.
H and T are runtime arguments (one compiled kernel serves every model width and length).
"""
import triton
import triton.language as tl

from .triton_tiles import (decays_and_scores, intra_key_grads, intra_query_grads, mm,
                           running_log_decays, tile_log_decays)


@triton.jit
def chunk_state_grads_bwd(r_ptr, w_ptr, dy_ptr, dfinal_ptr, dstates_ptr, ds0_ptr, T, H,
                          K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                          BK: tl.constexpr, BV: tl.constexpr, HAS_DFINAL: tl.constexpr,
                          PREC: tl.constexpr):
    """Gradient of the state leaving every chunk, for one [BK, BV] block of one head."""
    pk, pv, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = pk * BK + tl.arange(0, BK)
    cv = pv * BV + tl.arange(0, BV)
    rows = tl.arange(0, C)
    base_k = (b * T * H + h) * K
    base_v = (b * T * H + h) * V
    block = ck[:, None] * V + cv[None, :]
    if HAS_DFINAL:
        ds = tl.load(dfinal_ptr + bh * K * V + block).to(tl.float32)
    else:
        ds = tl.zeros((BK, BV), dtype=tl.float32)
    for m in range(n_chunks):
        n = n_chunks - 1 - m
        tl.store(dstates_ptr + (bh * n_chunks + n) * K * V + block, ds)
        t = n * C + rows
        valid = (t < T)[:, None]
        kw_off = base_k + t[:, None] * (H * K) + ck[None, :]
        r = tl.load(r_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + base_v + t[:, None] * (H * V) + cv[None, :], mask=valid,
                     other=0.0).to(tl.float32)
        b_ex, a_in, a_rev, a_tot = tile_log_decays(w, valid)
        ds = ds * tl.exp(a_tot)[:, None] + mm(tl.trans(r * tl.exp(b_ex)), dy, PREC)
    tl.store(ds0_ptr + bh * K * V + block, ds)


@triton.jit
def chunk_value_grads_bwd(r_ptr, k_ptr, w_ptr, dy_ptr, u_ptr, dstates_ptr, dv_ptr, T, H,
                          K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                          BC: tl.constexpr, BV: tl.constexpr, HAS_U: tl.constexpr,
                          PREC: tl.constexpr):
    """dv = (k e^{a_rev}) dS_leaving + P^T dy for one chunk and one block of value channels."""
    pv, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = tl.arange(0, K)
    cv = pv * BV + tl.arange(0, BV)
    sub = tl.arange(0, BC)
    base_k = (b * T * H + h) * K
    base_v = (b * T * H + h) * V
    ds = tl.load(dstates_ptr + (bh * n_chunks + n) * K * V + ck[:, None] * V + cv[None, :])
    for j in range(C // BC):
        i = C // BC - 1 - j
        t0 = n * C + i * BC
        t = t0 + sub
        valid = (t < T)[:, None]
        kw_off = base_k + t[:, None] * (H * K) + ck[None, :]
        v_off = base_v + t[:, None] * (H * V) + cv[None, :]
        r = tl.load(r_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
        row0 = base_k + t0 * (H * K) + ck
        b_ex, a_in, a_rev, a_tot, p = decays_and_scores(
            r, k, w, valid, k_ptr + row0, w_ptr + row0, H * K, T - t0, ck, u_ptr + h * K + ck,
            HAS_U, BC)
        dv = mm(k * tl.exp(a_rev), ds, PREC) + mm(tl.trans(p), dy, PREC)
        tl.store(dv_ptr + v_off, dv.to(dv_ptr.dtype.element_ty), mask=valid)
        ds = ds * tl.exp(a_tot)[:, None] + mm(tl.trans(r * tl.exp(b_ex)), dy, PREC)


@triton.jit
def chunk_rk_grads_bwd(r_ptr, k_ptr, v_ptr, w_ptr, dy_ptr, states_ptr, dstates_ptr, dr_ptr, dk_ptr,
                       carry_ptr, T, H, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                       BC: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
    """dr and dk (fp32, bonus excluded) for one chunk and one block of key channels, and
    carry = sum_v S_leaving dS_leaving, the decay gradient that everything after the chunk adds."""
    pk, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = pk * BK + tl.arange(0, BK)
    cv = tl.arange(0, V)
    sub = tl.arange(0, BC)
    base_k = (b * T * H + h) * K
    base_v = (b * T * H + h) * V
    block = (bh * n_chunks + n) * K * V + ck[:, None] * V + cv[None, :]
    s = tl.load(states_ptr + block)
    for i in range(C // BC):
        t0 = n * C + i * BC
        t = t0 + sub
        valid = (t < T)[:, None]
        kw_off = base_k + t[:, None] * (H * K) + ck[None, :]
        v_off = base_v + t[:, None] * (H * V) + cv[None, :]
        k = tl.load(k_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
        row0 = base_k + t0 * (H * K) + ck
        b_ex, a_in, a_rev, a_tot = running_log_decays(w, valid, w_ptr + row0, H * K, T - t0, ck, BC)
        dr = (tl.exp(b_ex) * mm(dy, tl.trans(s), PREC)
              + intra_query_grads(dy, b_ex, k_ptr + row0, w_ptr + row0, H * K,
                                  v_ptr + base_v + t0 * (H * V) + cv, H * V, T - t0, ck, cv, BC))
        tl.store(dr_ptr + kw_off, dr, mask=valid)
        s = s * tl.exp(a_tot)[:, None] + mm(tl.trans(k * tl.exp(a_rev)), v, PREC)
    ds = tl.load(dstates_ptr + block)
    tl.store(carry_ptr + (bh * n_chunks + n) * K + ck, tl.sum(s * ds, 1))
    for j in range(C // BC):
        i = C // BC - 1 - j
        t0 = n * C + i * BC
        t = t0 + sub
        valid = (t < T)[:, None]
        kw_off = base_k + t[:, None] * (H * K) + ck[None, :]
        v_off = base_v + t[:, None] * (H * V) + cv[None, :]
        r = tl.load(r_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
        row0 = base_k + t0 * (H * K) + ck
        b_ex, a_in, a_rev, a_tot = running_log_decays(w, valid, w_ptr + row0, H * K, T - t0, ck, BC)
        dk = (tl.exp(a_rev) * mm(v, tl.trans(ds), PREC)
              + intra_key_grads(v, a_in, r_ptr + row0, w_ptr + row0, H * K,
                                dy_ptr + base_v + t0 * (H * V) + cv, H * V, T - t0, ck, cv, BC))
        tl.store(dk_ptr + kw_off, dk, mask=valid)
        ds = ds * tl.exp(a_tot)[:, None] + mm(tl.trans(r * tl.exp(b_ex)), dy, PREC)


@triton.jit
def decay_bonus_grads_bwd(r_ptr, k_ptr, v_ptr, w_ptr, dy_ptr, u_ptr, drp_ptr, dkp_ptr, carry_ptr,
                          dr_ptr, dk_ptr, dw_ptr, du_ptr, T, H,
                          K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                          BK: tl.constexpr, BV: tl.constexpr, HAS_U: tl.constexpr):
    """dw of one chunk from the in-chunk reverse sum of r dr - k dk plus the chunk's carry;
    dr, dk gain the bonus terms; du summed over the chunk."""
    pk, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = pk * BK + tl.arange(0, BK)
    t = n * C + tl.arange(0, C)
    valid = (t < T)[:, None]
    kw_off = (b * T * H + h) * K + t[:, None] * (H * K) + ck[None, :]
    r = tl.load(r_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + kw_off, mask=valid, other=0.0).to(tl.float32)
    drp = tl.load(drp_ptr + kw_off, mask=valid, other=0.0)
    dkp = tl.load(dkp_ptr + kw_off, mask=valid, other=0.0)
    carry = tl.load(carry_ptr + (bh * n_chunks + n) * K + ck)
    g = r * drp - k * dkp
    dld = tl.cumsum(g, 0, reverse=True) - r * drp + carry[None, :]
    tl.store(dw_ptr + kw_off, (dld * -tl.exp(w)).to(dw_ptr.dtype.element_ty), mask=valid)
    if HAS_U:
        u = tl.load(u_ptr + h * K + ck).to(tl.float32)
        vdy = tl.zeros((C,), dtype=tl.float32)
        for j in range(V // BV):  # v_t . dy_t, BV channels at a time (registers)
            cv = j * BV + tl.arange(0, BV)
            v_off = (b * T * H + h) * V + t[:, None] * (H * V) + cv[None, :]
            v = tl.load(v_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + v_off, mask=valid, other=0.0).to(tl.float32)
            vdy += tl.sum(v * dy, 1)
        vdy = vdy[:, None]
        drp += u[None, :] * k * vdy
        dkp += u[None, :] * r * vdy
        tl.store(du_ptr + (bh * n_chunks + n) * K + ck, tl.sum(r * k * vdy, 0))
    tl.store(dr_ptr + kw_off, drp.to(dr_ptr.dtype.element_ty), mask=valid)
    tl.store(dk_ptr + kw_off, dkp.to(dk_ptr.dtype.element_ty), mask=valid)
