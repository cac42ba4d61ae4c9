"""Tile-level pieces shared by the WKV6 Triton kernels: decays of a tile, intra-tile pairs, dots.

A tile is a block of consecutive tokens (rows) of one head. With ld = -exp(w) <= 0 the
per-channel log-decay of each row, every quantity below is a sum of ld over a range of rows,
measured from inside the tile, so every exponent that reaches `exp` is <= 0:
    a_in[t]  = sum_{j <= t} ld[j]        (inclusive, from the tile start)
    b_ex[t]  = sum_{j <  t} ld[j]        (exclusive: the decay a query at t sees from the start)
    a_rev[s] = sum_{j >  s} ld[j]        (what a key at s decays by until the tile end)
    a_tot    = sum_j ld[j]               (decay across the whole tile)
Pair terms exp(b_ex[t] - a_in[s]) for s < t are formed per key channel, never as a quotient of
two cumulative decays, so decays of exp(-exp(5)) per step underflow to 0 instead of overflowing.

The pair loops walk one row at a time. The row (of k, w, r, v or dy) is loaded from memory (it
is in L1: the tile was just read) and its cumulative decay carried as a running sum, instead of
being picked out of a register tile: picking a row is a reduction across warps, a barrier each.
"""
import triton
import triton.language as tl

from ..triton_runtime import interpreting

# The interpreter multiplies exactly in fp32 (Triton 3.9's gets bf16 operands wrong, and rounds
# fp32 to bf16 by truncation), so there the operands are rounded to nearest as the tensor cores
# round them, and CI sees the precision a GPU gives.
INTERPRETED = tl.constexpr(interpreting())


@triton.jit
def _rounded(x, HALF_ULP: tl.constexpr, MASK: tl.constexpr):
    """x with its mantissa cut to the bits MASK keeps, rounded to nearest, as fp32."""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits + HALF_ULP) & MASK).to(tl.float32, bitcast=True)


@triton.jit
def mm(a, b, PREC: tl.constexpr):
    """a @ b with fp32 accumulation: bf16 operands for PREC="bf16", else fp32 ones at PREC."""
    if INTERPRETED:
        if PREC == "bf16":
            return tl.dot(_rounded(a, 0x8000, -65536), _rounded(b, 0x8000, -65536),
                          input_precision="ieee")
        elif PREC == "tf32":
            return tl.dot(_rounded(a, 0x1000, -8192), _rounded(b, 0x1000, -8192),
                          input_precision="ieee")
        else:
            return tl.dot(a, b, input_precision=PREC)
    elif PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def tile_log_decays(w, valid):
    """(b_ex, a_in, a_rev, a_tot) of a [rows, channels] tile of w; invalid rows decay by 1."""
    ld = tl.where(valid, -tl.exp(w), 0.0)
    a_in = tl.cumsum(ld, 0)
    b_ex = a_in - ld
    a_rev = tl.cumsum(ld, 0, reverse=True) - ld
    a_tot = tl.sum(ld, 0)
    return b_ex, a_in, a_rev, a_tot


# The loops below load their rows inline and step pointers by addition: the CPU interpreter pays
# about a third of a millisecond per call of a jitted helper and more per checked integer
# product. A row's log-decay is always -exp(load(w, other=-inf)), so running sums agree bitwise.


@triton.jit
def running_log_decays(w, valid, w_rows, row_stride, n_valid, cols, BC: tl.constexpr):
    """(b_ex, a_in, a_rev, a_tot) of a sub-chunk tile, the cumulative sums taken row by row with
    exactly the operations the pair loops below repeat: their exponents b_ex[t] - a_in[s] then
    agree bit for bit between dr and dk, whose rounding would otherwise not cancel in dw."""
    idx = tl.arange(0, BC)[:, None]
    b_ex = tl.zeros_like(w)
    a_in = tl.zeros_like(w)
    run = tl.zeros_like(cols).to(tl.float32)
    n_rows = tl.zeros_like(cols) + n_valid
    for s in range(BC):
        b_ex = tl.where(idx == s, run[None, :], b_ex)
        run += -tl.exp(tl.load(w_rows, mask=n_rows > s, other=float("-inf")).to(tl.float32))
        a_in = tl.where(idx == s, run[None, :], a_in)
        w_rows += row_stride
    ld = tl.where(valid, -tl.exp(w), 0.0)
    a_rev = tl.cumsum(ld, 0, reverse=True) - ld
    return b_ex, a_in, a_rev, run


@triton.jit
def intra_scores(r, k_rows, b_ex, w_rows, row_stride, n_valid, cols, BC: tl.constexpr):
    """P[t, s] = sum_c r[t,c] k[s,c] exp(b_ex[t,c] - a_in[s,c]) for s < t, else 0 ([BC, BC]).
    k_rows / w_rows point at the columns of the tile's first row in memory."""
    idx = tl.arange(0, BC)
    p = tl.zeros((BC, BC), dtype=tl.float32)
    a_s = tl.zeros_like(cols).to(tl.float32)
    n_rows = tl.zeros_like(cols) + n_valid
    for s in range(BC - 1):  # the last key has no later query
        a_s += -tl.exp(tl.load(w_rows, mask=n_rows > s, other=float("-inf")).to(tl.float32))
        k_s = tl.load(k_rows, mask=n_rows > s, other=0.0).to(tl.float32)
        col = tl.sum(r * k_s[None, :] * tl.exp(tl.minimum(b_ex - a_s[None, :], 0.0)), 1)
        p = tl.where((idx[None, :] == s) & (idx[:, None] > s), col[:, None], p)
        w_rows += row_stride
        k_rows += row_stride
    return p


@triton.jit
def intra_query_grads(dy, b_ex, k_rows, w_rows, kw_stride, v_rows, v_stride, n_valid, cols,
                      v_cols, BC: tl.constexpr):
    """dr[t, c] = sum_{s<t} d[t,s] k[s,c] exp(b_ex[t,c] - a_in[s,c]), d[t,s] = dy_t . v_s."""
    idx = tl.arange(0, BC)
    acc = tl.zeros_like(b_ex)
    a_s = tl.zeros_like(cols).to(tl.float32)
    n_rows = tl.zeros_like(cols) + n_valid
    n_v_rows = tl.zeros_like(v_cols) + n_valid
    for s in range(BC - 1):
        a_s += -tl.exp(tl.load(w_rows, mask=n_rows > s, other=float("-inf")).to(tl.float32))
        k_s = tl.load(k_rows, mask=n_rows > s, other=0.0).to(tl.float32)
        v_s = tl.load(v_rows, mask=n_v_rows > s, other=0.0).to(tl.float32)
        d_s = tl.where(idx > s, tl.sum(dy * v_s[None, :], 1), 0.0)
        acc += d_s[:, None] * k_s[None, :] * tl.exp(tl.minimum(b_ex - a_s[None, :], 0.0))
        w_rows += kw_stride
        k_rows += kw_stride
        v_rows += v_stride
    return acc


@triton.jit
def intra_key_grads(v, a_in, r_rows, w_rows, kw_stride, dy_rows, v_stride, n_valid, cols,
                    v_cols, BC: tl.constexpr):
    """dk[s, c] = sum_{t>s} d[t,s] r[t,c] exp(b_ex[t,c] - a_in[s,c]), d[t,s] = dy_t . v_s."""
    idx = tl.arange(0, BC)
    acc = tl.zeros_like(a_in)
    b_t = tl.zeros_like(cols).to(tl.float32)  # b_ex of row t: the decay of the rows before it
    n_rows = tl.zeros_like(cols) + n_valid
    n_v_rows = tl.zeros_like(v_cols) + n_valid
    for t in range(1, BC):  # the first query has no earlier key
        b_t += -tl.exp(tl.load(w_rows, mask=n_rows > t - 1, other=float("-inf")).to(tl.float32))
        r_rows += kw_stride
        dy_rows += v_stride
        w_rows += kw_stride
        r_t = tl.load(r_rows, mask=n_rows > t, other=0.0).to(tl.float32)
        dy_t = tl.load(dy_rows, mask=n_v_rows > t, other=0.0).to(tl.float32)
        d_t = tl.where(idx < t, tl.sum(v * dy_t[None, :], 1), 0.0)
        acc += d_t[:, None] * r_t[None, :] * tl.exp(tl.minimum(b_t[None, :] - a_in, 0.0))
    return acc


@triton.jit
def decays_and_scores(r, k, w, valid, k_rows, w_rows, row_stride, n_valid, cols, u_row_ptr,
                      HAS_U: tl.constexpr, BC: tl.constexpr):
    """The tile's log-decays and pair scores P, with the bonus r_t.(u*k_t) on P's diagonal when
    the model has one (Finch; Finch-C2 has none)."""
    b_ex, a_in, a_rev, a_tot = running_log_decays(w, valid, w_rows, row_stride, n_valid, cols, BC)
    p = intra_scores(r, k_rows, b_ex, w_rows, row_stride, n_valid, cols, BC)
    if HAS_U:
        idx = tl.arange(0, BC)
        u = tl.load(u_row_ptr).to(tl.float32)
        bonus = tl.sum(r * u[None, :] * k, 1)
        p = tl.where(idx[:, None] == idx[None, :], bonus[:, None], p)
    return b_ex, a_in, a_rev, a_tot, p
