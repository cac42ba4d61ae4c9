"""One chunk of the WKV7 recurrence in WY form: the pieces both Triton kernels rebuild per chunk.

Within a chunk of C tokens (rows) with entering state S, let g_t be the inclusive cumulative
log-decay from the chunk start (per key channel), gp_t = g_t - ld_t the exclusive one and gc the
chunk total. Unrolling S_t = diag(e^{ld_t}) S_{t-1} + b_t^T u_t + k_t^T v_t with u_t = a_t S_{t-1}:
    u = ã S + A_ab u + A_ak v        A_ab[t,s] = ã_t . b̃_s, A_ak[t,s] = ã_t . k̃_s   (s < t)
    y = r̃ S + A_rb u + A_rk v        A_rb[t,s] = r̃_t . b̃_s, A_rk[t,s] = r̃_t . k̃_s   (s <= t)
    S' = e^{gc} S + b̂^T u + k̂^T v
with ã = a e^{gp}, r̃ = r e^{g}, b̃ = b e^{-g}, k̃ = k e^{-g}, b̂ = b̃ e^{gc}, k̂ = k̃ e^{gc}.
So u = (I - A_ab)^{-1} (ã S + A_ak v): one 16x16 unit-lower-triangular inverse per chunk, and the
rest is dots. Each pair term is the product of two factors whose exponents are window sums of
log-decays; e^{-g} grows with the chunk's total decay, which LOG_DECAY_FLOOR bounds (triton_plan).
Padded rows (t >= T) load as zeros with no decay: they change nothing.
"""
import triton
import triton.language as tl

from ..wkv6.triton_tiles import mm


@triton.jit
def load_rows(ptr, base, t, valid, cols, row_stride):
    """A [rows, cols] fp32 tile of a [B, T, H, X] tensor (zeros past T)."""
    offs = base + t[:, None] * row_stride + cols[None, :]
    return tl.load(ptr + offs, mask=valid, other=0.0).to(tl.float32)


@triton.jit
def load_chunk(r_ptr, w_ptr, k_ptr, a_ptr, b_ptr, v_ptr, base, t, valid, ck, cv, row_stride):
    """One chunk's r, w, k, a, b (all key channels) and v (this program's value tile), fp32."""
    r = load_rows(r_ptr, base, t, valid, ck, row_stride)
    w = load_rows(w_ptr, base, t, valid, ck, row_stride)
    k = load_rows(k_ptr, base, t, valid, ck, row_stride)
    a = load_rows(a_ptr, base, t, valid, ck, row_stride)
    b = load_rows(b_ptr, base, t, valid, ck, row_stride)
    v = load_rows(v_ptr, base, t, valid, cv, row_stride)
    return r, w, k, a, b, v


@triton.jit
def chunk_decays(w, valid, LD_MIN: tl.constexpr):
    """(ld, g, gp, gc): per-row log-decays (floored at LD_MIN, 0 on padded rows), their
    inclusive and exclusive cumulative sums from the chunk start, and the chunk total."""
    ld = tl.where(valid, tl.maximum(-tl.exp(w), LD_MIN), 0.0)
    g = tl.cumsum(ld, 0)
    return ld, g, g - ld, tl.sum(ld, 0)


@triton.jit
def unit_lower_inverse(a, C: tl.constexpr):
    """(I - A)^{-1} for a strictly lower-triangular [C, C] A (C a power of two): A is nilpotent,
    so the inverse is (I + A)(I + A^2)(I + A^4)...; exact fp32 dots."""
    idx = tl.arange(0, C)
    eye = tl.where(idx[:, None] == idx[None, :], 1.0, 0.0)
    inv = eye + a
    power = a
    for i in tl.static_range(6):  # the factors I + A^2, I + A^4, ... below A^C = 0 (C <= 128)
        if (2 << i) < C:
            power = tl.dot(power, power, input_precision="ieee")
            inv = inv + tl.dot(inv, power, input_precision="ieee")
    return inv


@triton.jit
def chunk_factors(r, w, k, a, b, valid, LD_MIN: tl.constexpr):
    """(r̃, ã, b̃, k̃, e^{gc}, g, ld): the decay-scaled rows of one chunk (module docstring);
    b̂ = b̃ e^{gc} and k̂ = k̃ e^{gc} are formed where they are used."""
    ld, g, gp, gc = chunk_decays(w, valid, LD_MIN)
    inv_g = tl.exp(-g)
    return r * tl.exp(g), a * tl.exp(gp), b * inv_g, k * inv_g, tl.exp(gc), g, ld


@triton.jit
def pair_matrices(rt, at, bt, kt, C: tl.constexpr, PREC: tl.constexpr):
    """(A_ab, A_ak, A_rb, A_rk): strictly lower for the a rows, lower with diagonal for r."""
    idx = tl.arange(0, C)
    strict = idx[:, None] > idx[None, :]
    incl = idx[:, None] >= idx[None, :]
    a_ab = tl.where(strict, mm(at, tl.trans(bt), PREC), 0.0)
    a_ak = tl.where(strict, mm(at, tl.trans(kt), PREC), 0.0)
    a_rb = tl.where(incl, mm(rt, tl.trans(bt), PREC), 0.0)
    a_rk = tl.where(incl, mm(rt, tl.trans(kt), PREC), 0.0)
    return a_ab, a_ak, a_rb, a_rk
