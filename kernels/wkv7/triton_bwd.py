"""WKV7 backward in Triton: one program per (value tile, batch x head) walks the chunks backwards.

It carries dS, the gradient of the state leaving the chunk, reads the state S entering it (stored
by a recomputing forward pass), rebuilds the chunk's WY pieces and runs the chunk backwards:
    du = A_rb^T dy + b̂ dS,   drhs = (I - A_ab)^{-T} du                        (rhs = ã S + A_ak v)
    dv = A_rk^T dy + k̂ dS + A_ak^T drhs                     (complete: v's channels are the tile's)
    dr̃ = dy S^T + dA_rb b̃ + dA_rk k̃,   dã = drhs S^T + dA_ab b̃ + dA_ak k̃
    db̃ = dA_ab^T ã + dA_rb^T r̃,   dk̃ = dA_ak^T ã + dA_rk^T r̃,   db̂ = u dS^T,   dk̂ = v dS^T
    dS <- e^{gc} dS + r̃^T dy + ã^T drhs
with dA_rb = tril(dy u^T), dA_rk = tril(dy v^T), dA_ab = stril(drhs u^T), dA_ak = stril(drhs v^T).
The key-side gradients (dr, dw, dk, da, db) sum over value channels, so each tile writes its own
fp32 partials ([NV, B, T, H, K]) and the caller adds them. The decay enters only through g, gp and
gc; dL/dld_j = sum_{t>=j} dg_t + sum_{t>j} dgp_t + dgc, and dw = dL/dld * ld (ld = -exp(w);
zero where the floor binds).
"""
import triton
import triton.language as tl

from ..wkv6.triton_tiles import mm
from .triton_chunk import chunk_factors, load_rows, pair_matrices, unit_lower_inverse


@triton.jit
def key_side_grads(drt, dat, dbt, dkt, dbh, dkh, rt, at, bt, kt, bh_, kh, decay, ld, s, ds, w,
                   valid, LD_MIN: tl.constexpr):
    """(dr, da, db, dk, dw) of one chunk from the gradients of its decay-scaled rows."""
    dg = drt * rt - dbt * bt - dkt * kt - dbh * bh_ - dkh * kh
    dgp = dat * at
    dgc = decay * tl.sum(ds * s, 1) + tl.sum(dbh * bh_ + dkh * kh, 0)
    dld = tl.cumsum(dg + dgp, 0, reverse=True) - dgp + dgc[None, :]
    dw = tl.where(valid & (-tl.exp(w) > LD_MIN), dld * ld, 0.0)
    # r̃ = r e^g etc.: each input's gradient is its scaled row's gradient times the same factor
    g = tl.cumsum(ld, 0)
    e_g, e_gp, e_neg = tl.exp(g), tl.exp(g - ld), tl.exp(-g)
    e_tail = tl.exp(tl.sum(ld, 0)[None, :] - g)
    return drt * e_g, dat * e_gp, dbt * e_neg + dbh * e_tail, dkt * e_neg + dkh * e_tail, dw


@triton.jit
def store_key_grads(part_ptr, stride_part, offs, valid, dr, da, db, dk, dw):
    """The five fp32 partials, stacked as [5, NV, B, T, H, K] (stride_part between inputs)."""
    tl.store(part_ptr + offs, dr, mask=valid)
    tl.store(part_ptr + stride_part + offs, dw, mask=valid)
    tl.store(part_ptr + 2 * stride_part + offs, dk, mask=valid)
    tl.store(part_ptr + 3 * stride_part + offs, da, mask=valid)
    tl.store(part_ptr + 4 * stride_part + offs, db, mask=valid)


@triton.jit
def wkv7_bwd_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, dy_ptr, states_ptr, dfinal_ptr,
                    dv_ptr, part_ptr, ds0_ptr, T, H, stride_tile,
                    K: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, PREC: tl.constexpr,
                    LD_MIN: tl.constexpr, HAS_DFINAL: tl.constexpr):
    """dv and the key-side partials for one value tile of one head, and its initial-state grad."""
    pv, bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    b_idx, h = bh // H, bh % H
    n_chunks = tl.cdiv(T, C)
    ck = tl.arange(0, K)
    cv = pv * BV + tl.arange(0, BV)
    rows = tl.arange(0, C)
    stride_part = stride_tile.to(tl.int64) * (K // BV)
    strict = rows[:, None] > rows[None, :]
    incl = rows[:, None] >= rows[None, :]
    base = (b_idx * T * H + h) * K
    block = ck[:, None] * K + cv[None, :]
    part_base = part_ptr + pv * stride_tile
    if HAS_DFINAL:
        ds = tl.load(dfinal_ptr + bh * K * K + block).to(tl.float32)
    else:
        ds = tl.zeros((K, BV), dtype=tl.float32)
    for m in range(n_chunks):
        n = n_chunks - 1 - m
        s = tl.load(states_ptr + (bh * n_chunks + n) * K * K + block)
        t = n * C + rows
        valid = (t < T)[:, None]
        r = load_rows(r_ptr, base, t, valid, ck, H * K)
        w = load_rows(w_ptr, base, t, valid, ck, H * K)
        k = load_rows(k_ptr, base, t, valid, ck, H * K)
        a = load_rows(a_ptr, base, t, valid, ck, H * K)
        b = load_rows(b_ptr, base, t, valid, ck, H * K)
        v = load_rows(v_ptr, base, t, valid, cv, H * K)
        dy = load_rows(dy_ptr, base, t, valid, cv, H * K)
        rt, at, bt, kt, bh_, kh, decay, ld = chunk_factors(r, w, k, a, b, valid, LD_MIN)
        a_ab, a_ak, a_rb, a_rk = pair_matrices(rt, at, bt, kt, C, PREC)
        inv = unit_lower_inverse(a_ab, C)
        u = mm(inv, mm(at, s, PREC) + mm(a_ak, v, PREC), "ieee")
        du = mm(tl.trans(a_rb), dy, PREC) + mm(bh_, ds, PREC)
        drhs = mm(tl.trans(inv), du, "ieee")
        dv = mm(tl.trans(a_rk), dy, PREC) + mm(kh, ds, PREC) + mm(tl.trans(a_ak), drhs, PREC)
        tl.store(dv_ptr + base + t[:, None] * (H * K) + cv[None, :],
                 dv.to(dv_ptr.dtype.element_ty), mask=valid)
        d_rb = tl.where(incl, mm(dy, tl.trans(u), PREC), 0.0)
        d_rk = tl.where(incl, mm(dy, tl.trans(v), PREC), 0.0)
        d_ab = tl.where(strict, mm(drhs, tl.trans(u), PREC), 0.0)
        d_ak = tl.where(strict, mm(drhs, tl.trans(v), PREC), 0.0)
        drt = mm(dy, tl.trans(s), PREC) + mm(d_rb, bt, PREC) + mm(d_rk, kt, PREC)
        dat = mm(drhs, tl.trans(s), PREC) + mm(d_ab, bt, PREC) + mm(d_ak, kt, PREC)
        dbt = mm(tl.trans(d_ab), at, PREC) + mm(tl.trans(d_rb), rt, PREC)
        dkt = mm(tl.trans(d_ak), at, PREC) + mm(tl.trans(d_rk), rt, PREC)
        dbh = mm(u, tl.trans(ds), PREC)
        dkh = mm(v, tl.trans(ds), PREC)
        dr, da, db, dk, dw = key_side_grads(drt, dat, dbt, dkt, dbh, dkh, rt, at, bt, kt, bh_, kh,
                                            decay, ld, s, ds, w, valid, LD_MIN)
        store_key_grads(part_base, stride_part, base + t[:, None] * (H * K) + ck[None, :], valid,
                        dr, da, db, dk, dw)
        ds = decay[:, None] * ds + mm(tl.trans(rt), dy, PREC) + mm(tl.trans(at), drhs, PREC)
    tl.store(ds0_ptr + bh * K * K + block, ds)
