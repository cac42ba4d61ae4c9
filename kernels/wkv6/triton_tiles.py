"""Tile-level pieces shared by the WKV6 Triton kernels: decays of a tile and intra-tile pairs.

A tile is a block of consecutive tokens (rows) of one head. With ld = -exp(w) <= 0 the
per-channel log-decay of each row, every quantity below is a sum of ld over a range of rows,
measured from inside the tile, so every exponent that reaches `exp` is <= 0:
    a_in[t]  = sum_{j <= t} ld[j]        (inclusive, from the tile start)
    b_ex[t]  = sum_{j <  t} ld[j]        (exclusive: the decay a query at t sees from the start)
    a_rev[s] = sum_{j >  s} ld[j]        (what a key at s decays by until the tile end)
    a_tot    = sum_j ld[j]               (decay across the whole tile)
Pair terms exp(b_ex[t] - a_in[s]) for s < t are formed per key channel, never as a quotient of
two cumulative decays, so decays of exp(-exp(5)) per step underflow to 0 instead of overflowing.
"""
import triton
import triton.language as tl


@triton.jit
def tile_log_decays(w, valid):
    """(b_ex, a_in, a_rev, a_tot) of a [rows, channels] tile of w; invalid rows decay by 1."""
    ld = tl.where(valid, -tl.exp(w), 0.0)
    a_in = tl.cumsum(ld, 0)
    b_ex = a_in - ld
    a_rev = tl.cumsum(ld, 0, reverse=True) - ld
    a_tot = tl.sum(ld, 0)
    return b_ex, a_in, a_rev, a_tot


@triton.jit
def pick_row(x, idx, i):
    """Row i of a register tile x (as a vector over columns)."""
    return tl.sum(tl.where((idx == i)[:, None], x, 0.0), 0)


@triton.jit
def intra_scores(r, k, b_ex, a_in, BC: tl.constexpr):
    """P[t, s] = sum_c r[t,c] k[s,c] exp(b_ex[t,c] - a_in[s,c]) for s < t, else 0 ([BC, BC])."""
    idx = tl.arange(0, BC)
    p = tl.zeros((BC, BC), dtype=tl.float32)
    for s in tl.static_range(BC):
        k_s = pick_row(k, idx, s)
        a_s = pick_row(a_in, idx, s)
        col = tl.sum(r * k_s[None, :] * tl.exp(tl.minimum(b_ex - a_s[None, :], 0.0)), 1)
        p = tl.where((idx[None, :] == s) & (idx[:, None] > s), col[:, None], p)
    return p


@triton.jit
def intra_query_grads(d, k, b_ex, a_in, BC: tl.constexpr):
    """dr[t, c] = sum_{s<t} d[t,s] k[s,c] exp(b_ex[t,c] - a_in[s,c]); d[t,s] = dy_t . v_s."""
    idx = tl.arange(0, BC)
    acc = tl.zeros_like(k)
    for s in tl.static_range(BC):
        k_s = pick_row(k, idx, s)
        a_s = pick_row(a_in, idx, s)
        d_s = tl.sum(tl.where(idx[None, :] == s, d, 0.0), 1)
        term = d_s[:, None] * k_s[None, :] * tl.exp(tl.minimum(b_ex - a_s[None, :], 0.0))
        acc += tl.where(idx[:, None] > s, term, 0.0)
    return acc


@triton.jit
def intra_key_grads(d, r, b_ex, a_in, BC: tl.constexpr):
    """dk[s, c] = sum_{t>s} d[t,s] r[t,c] exp(b_ex[t,c] - a_in[s,c]); d[t,s] = dy_t . v_s."""
    idx = tl.arange(0, BC)
    acc = tl.zeros_like(r)
    for t in tl.static_range(BC):
        r_t = pick_row(r, idx, t)
        b_t = pick_row(b_ex, idx, t)
        d_t = tl.sum(tl.where(idx[:, None] == t, d, 0.0), 0)
        term = d_t[:, None] * r_t[None, :] * tl.exp(tl.minimum(b_t[None, :] - a_in, 0.0))
        acc += tl.where(idx[:, None] < t, term, 0.0)
    return acc


@triton.jit
def decays_and_scores(r, k, w, valid, u_row_ptr, HAS_U: tl.constexpr, BC: tl.constexpr):
    """The tile's log-decays and pair scores P, with the bonus r_t.(u*k_t) on P's diagonal when
    the model has one (Finch; Finch-C2 has none)."""
    b_ex, a_in, a_rev, a_tot = tile_log_decays(w, valid)
    p = intra_scores(r, k, b_ex, a_in, BC)
    if HAS_U:
        idx = tl.arange(0, BC)
        u = tl.load(u_row_ptr).to(tl.float32)
        bonus = tl.sum(r * u[None, :] * k, 1)
        p = tl.where(idx[:, None] == idx[None, :], bonus[:, None], p)
    return b_ex, a_in, a_rev, a_tot, p
