"""WKV7 backward in Triton: one program per (value tile, batch x head) walks the chunks backwards.

It carries dS, the gradient of the state leaving the chunk, reads the state S entering it (stored
by a recomputing forward pass), rebuilds the chunk's WY pieces and runs the chunk backwards:
    S' = e^{gc} (S + b̃^T u + k̃^T v);  with dS_o = e^{gc} dS:
    du = A_rb^T dy + b̃ dS_o,   drhs = (I - A_ab)^{-T} du                      (rhs = ã S + A_ak v)
    dv = A_rk^T dy + k̃ dS_o + A_ak^T drhs                   (complete: v's channels are the tile's)
    dr̃ = dy S^T + dA_rb b̃ + dA_rk k̃,   dã = drhs S^T + dA_ab b̃ + dA_ak k̃
    db̃ = dA_ab^T ã + dA_rb^T r̃ + u dS_o^T,   dk̃ = dA_ak^T ã + dA_rk^T r̃ + v dS_o^T
    dS <- dS_o + r̃^T dy + ã^T drhs
with dA_rb = tril(dy u^T), dA_rk = tril(dy v^T), dA_ab = stril(drhs u^T), dA_ak = stril(drhs v^T).
The key-side gradients (dr, dw, dk, da, db) sum over value channels, so each tile writes its own
fp32 partials ([5, NV, B, T, H, K]: r, w, k, a, b) and the caller adds them. The decay enters
only through g, gp and gc; dL/dld_j = sum_{t>=j} dg_t + sum_{t>j} dgp_t + dgc, and
dw = dL/dld * ld (ld = -exp(w); zero where the floor binds).

The state's key channels are tiled too: K = 128 held whole spilled. dS lives in this program's
[K, BV] block of the dS0 output (the final value is the answer) and every pass over key channels
walks slices of BK, reloading the slice's inputs and S (cache hits) and recomputing their decay
factors. Phase 1 sums the dots over key channels slice by slice (A_*, ã S, b̃ dS_o, k̃ dS_o: [C, C]
and [C, BV] accumulators); then u, drhs and dv. Phase 2 writes each slice's key-side partials and
steps its rows of dS. Barriers order the reads and writes of dS between threads.
"""
import triton
import triton.language as tl

from ..wkv6.triton_tiles import mm
from .triton_chunk import chunk_factors, load_rows, unit_lower_inverse


@triton.jit
def slice_factors(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, base, t, valid, ck, row_stride,
                  LD_MIN: tl.constexpr):
    """chunk_factors of key channels ck, loaded afresh."""
    r = load_rows(r_ptr, base, t, valid, ck, row_stride)
    w = load_rows(w_ptr, base, t, valid, ck, row_stride)
    k = load_rows(k_ptr, base, t, valid, ck, row_stride)
    a = load_rows(a_ptr, base, t, valid, ck, row_stride)
    b = load_rows(b_ptr, base, t, valid, ck, row_stride)
    return chunk_factors(r, w, k, a, b, valid, LD_MIN)


@triton.jit
def chunk_sums(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, s_ptr, ds_ptr, base, t, valid, cv, row_stride,
               K: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
               PREC: tl.constexpr, LD_MIN: tl.constexpr):
    """Phase 1: the sums over key channels, (ã b̃^T, ã k̃^T, r̃ b̃^T, r̃ k̃^T, ã S, b̃ dS_o, k̃ dS_o),
    pair products unmasked."""
    p_ab = tl.zeros((C, C), dtype=tl.float32)
    p_ak = tl.zeros((C, C), dtype=tl.float32)
    p_rb = tl.zeros((C, C), dtype=tl.float32)
    p_rk = tl.zeros((C, C), dtype=tl.float32)
    a_s = tl.zeros((C, BV), dtype=tl.float32)
    b_ds = tl.zeros((C, BV), dtype=tl.float32)
    k_ds = tl.zeros((C, BV), dtype=tl.float32)
    for j in tl.static_range(K // BK):
        ck = j * BK + tl.arange(0, BK)
        rt, at, bt, kt, decay, g, ld = slice_factors(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, base, t,
                                                     valid, ck, row_stride, LD_MIN)
        block = ck[:, None] * K + cv[None, :]
        p_ab += mm(at, tl.trans(bt), PREC)
        p_ak += mm(at, tl.trans(kt), PREC)
        p_rb += mm(rt, tl.trans(bt), PREC)
        p_rk += mm(rt, tl.trans(kt), PREC)
        a_s += mm(at, tl.load(s_ptr + block), PREC)
        ds_out = decay[:, None] * tl.load(ds_ptr + block)
        b_ds += mm(bt, ds_out, PREC)
        k_ds += mm(kt, ds_out, PREC)
    return p_ab, p_ak, p_rb, p_rk, a_s, b_ds, k_ds


@triton.jit
def key_slice_grads(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, s_ptr, ds_ptr, out_ptr, stride_part,
                    base, t, valid, ck, cv, row_stride, dy, u, v, drhs, d_rb, d_rk, d_ab, d_ak,
                    K: tl.constexpr, PREC: tl.constexpr, LD_MIN: tl.constexpr):
    """Phase 2 for key channels ck: this tile's partials of dr, dw, dk, da, db; dS steps."""
    rt, at, bt, kt, decay, g, ld = slice_factors(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, base, t,
                                                 valid, ck, row_stride, LD_MIN)
    block = ck[:, None] * K + cv[None, :]
    s = tl.load(s_ptr + block)
    ds_out = decay[:, None] * tl.load(ds_ptr + block)  # b̂^T u = (b̃^T u) e^{gc}: what b̃ sees
    ds = ds_out + mm(tl.trans(rt), dy, PREC) + mm(tl.trans(at), drhs, PREC)
    tl.debug_barrier()  # every thread has read these rows of dS (phase 1 and here)
    tl.store(ds_ptr + block, ds)
    offs = out_ptr + base + t[:, None] * row_stride + ck[None, :]
    # each scaled row's gradient goes out at once times its factor; dg, dgp and dgc gather
    # the decay's share (module docstring) so that few [C, BK] tiles are alive together
    grad = mm(dy, tl.trans(s), PREC) + mm(d_rb, bt, PREC) + mm(d_rk, kt, PREC)   # r̃
    tl.store(offs, grad * tl.exp(g), mask=valid)
    dg = grad * rt
    grad = mm(drhs, tl.trans(s), PREC) + mm(d_ab, bt, PREC) + mm(d_ak, kt, PREC)  # ã
    tl.store(offs + 3 * stride_part, grad * tl.exp(g - ld), mask=valid)
    dgp = grad * at
    dgc = tl.sum(ds_out * s, 1)
    grad = mm(tl.trans(d_ab), at, PREC) + mm(tl.trans(d_rb), rt, PREC)          # b̃, b̂
    out = mm(u, tl.trans(ds_out), PREC)
    dgc += tl.sum(out * bt, 0)
    grad += out
    tl.store(offs + 4 * stride_part, grad * tl.exp(-g), mask=valid)
    dg -= grad * bt
    grad = mm(tl.trans(d_ak), at, PREC) + mm(tl.trans(d_rk), rt, PREC)          # k̃, k̂
    out = mm(v, tl.trans(ds_out), PREC)
    dgc += tl.sum(out * kt, 0)
    grad += out
    tl.store(offs + 2 * stride_part, grad * tl.exp(-g), mask=valid)
    dg -= grad * kt
    dld = tl.cumsum(dg + dgp, 0, reverse=True) - dgp + dgc[None, :]
    tl.store(offs + stride_part, tl.where(ld > LD_MIN, dld * ld, 0.0), mask=valid)


@triton.jit
def wkv7_bwd_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, dy_ptr, states_ptr, dfinal_ptr,
                    dv_ptr, part_ptr, ds0_ptr, T, H, stride_tile,
                    K: tl.constexpr, BV: tl.constexpr, BK: tl.constexpr, C: tl.constexpr,
                    PREC: tl.constexpr, LD_MIN: tl.constexpr, HAS_DFINAL: tl.constexpr):
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
    ds_ptr = ds0_ptr + bh * K * K  # dS, in this program's block of the output
    if HAS_DFINAL:
        tl.store(ds_ptr + block, tl.load(dfinal_ptr + bh * K * K + block).to(tl.float32))
    else:
        tl.store(ds_ptr + block, tl.zeros((K, BV), dtype=tl.float32))
    tl.debug_barrier()
    for m in range(n_chunks):
        n = n_chunks - 1 - m
        s_ptr = states_ptr + (bh * n_chunks + n) * K * K
        t = n * C + rows
        valid = (t < T)[:, None]
        v = load_rows(v_ptr, base, t, valid, cv, H * K)
        dy = load_rows(dy_ptr, base, t, valid, cv, H * K)
        p_ab, p_ak, p_rb, p_rk, a_s, b_ds, k_ds = chunk_sums(
            r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, s_ptr, ds_ptr, base, t, valid, cv, H * K,
            K, BK, BV, C, PREC, LD_MIN)
        a_ab, a_ak = tl.where(strict, p_ab, 0.0), tl.where(strict, p_ak, 0.0)
        a_rb, a_rk = tl.where(incl, p_rb, 0.0), tl.where(incl, p_rk, 0.0)
        inv = unit_lower_inverse(a_ab, C)
        u = mm(inv, a_s + mm(a_ak, v, PREC), "ieee")
        drhs = mm(tl.trans(inv), mm(tl.trans(a_rb), dy, PREC) + b_ds, "ieee")
        dv = mm(tl.trans(a_rk), dy, PREC) + k_ds + mm(tl.trans(a_ak), drhs, PREC)
        tl.store(dv_ptr + base + t[:, None] * (H * K) + cv[None, :],
                 dv.to(dv_ptr.dtype.element_ty), mask=valid)
        d_rb = tl.where(incl, mm(dy, tl.trans(u), PREC), 0.0)
        d_rk = tl.where(incl, mm(dy, tl.trans(v), PREC), 0.0)
        d_ab = tl.where(strict, mm(drhs, tl.trans(u), PREC), 0.0)
        d_ak = tl.where(strict, mm(drhs, tl.trans(v), PREC), 0.0)
        for j in tl.static_range(K // BK):
            key_slice_grads(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, s_ptr, ds_ptr,
                            part_ptr + pv * stride_tile, stride_part, base, t, valid,
                            j * BK + tl.arange(0, BK), cv, H * K, dy, u, v, drhs,
                            d_rb, d_rk, d_ab, d_ak, K, PREC, LD_MIN)
        tl.debug_barrier()  # the next chunk reads the dS this one wrote
