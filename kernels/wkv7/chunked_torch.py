"""WKV7 in chunked (WY) matrix form, in plain torch: fast on CPU, differentiable by autograd.

Per chunk of C tokens with entering state S_in, let u_t = a_t S_{t-1} (what token t removes) and
P[t, s] = exp(sum of the log-decays over (s, t]) for s <= t (a [K] vector of pair decays; start is
the last token before the chunk, end its last). Then
    u_t   = (a_t * P[t-1, start]) S_in + sum_{s<t} (a_t P[t-1, s] . b_s) u_s + (a_t P[t-1, s] . k_s) v_s
    y_t   = (r_t * P[t, start]) S_in + sum_{s<=t} (r_t P[t, s] . b_s) u_s + (r_t P[t, s] . k_s) v_s
    S_out = P[end, start] * S_in + sum_s (b_s P[end, s])^T u_s + (k_s P[end, s])^T v_s
The first line is a unit lower-triangular system in u; one triangular solve per chunk gives
u = U_v + W S_in with U_v and W independent of S_in, so everything but the T/C-step scan over
chunks is batched matmuls. No cumulative decay is ever divided by: every exponent is a sum of
log-decays (<= 0) over its own window, and the pair decays P[t, s] are factored through the
midpoints of a recursive halving of the chunk (`_pair_mixes`), so every factor lies in [0, 1].
Strong decays underflow to zero, never overflow, for any w, at any chunk size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..wkv6.chunked_torch import MAX_LOG_LOG_DECAY, _to_chunks


def _after(log_decay):
    """Sum of the log-decays strictly after each row, to the end of its block: (s, end]."""
    return F.pad(log_decay.flip(-2), (0, 0, 1, 0))[..., :-1, :].cumsum(dim=-2).flip(-2)


def _halves(x, half: int):
    """[.., C, X] -> [.., C / (2 half), 2, half, X]: blocks of 2 half rows, split in two."""
    return x.reshape(*x.shape[:-2], -1, 2, half, x.shape[-1])


def _block_diag(blocks):
    """[.., nb, m, m] -> [.., nb m, nb m] with the blocks on the diagonal."""
    *lead, nb, m, _ = blocks.shape
    spread = torch.diag_embed(blocks.movedim(-3, -1))                 # [.., m, m, nb, nb]
    n = len(lead)
    return spread.permute(*range(n), n + 2, n, n + 3, n + 1).reshape(*lead, nb * m, nb * m)


def _pair_mixes(queries, keys, log_decay):
    """M[q, k, t, s] = sum_i queries[q, t, i] P[t, s, i] keys[k, s, i] for s <= t, else 0.

    queries, keys [.., Q, C, K]; log_decay [.., 1, C, K]; C a power of two. Halving the chunk
    recursively, a pair (t, s) first split apart by a midpoint m (s <= m < t) factors as
    P[t, s] = P[t, m] P[m, s], each a window sum of log-decays <= 0: exact, and never above 1.
    """
    c = queries.shape[-2]
    mix = torch.diag_embed((queries[..., :, None, :, :] * keys[..., None, :, :, :]).sum(-1))
    half = c // 2
    while half >= 1:
        ld = _halves(log_decay, half)
        late = _halves(queries, half)[..., 1, :, :] * torch.exp(ld[..., 1, :, :].cumsum(dim=-2))
        early = _halves(keys, half)[..., 0, :, :] * torch.exp(_after(ld[..., 0, :, :]))
        cross = late[..., :, None, :, :, :] @ early[..., None, :, :, :, :].transpose(-1, -2)
        mix = mix + _block_diag(F.pad(cross, (0, half, half, 0)))       # lower-left of each block
        half //= 2
    return mix


def _chunk_terms(r, k, v, a, b, log_decay):
    """Per chunk, everything the scan needs and nothing that depends on S_in:
    y = query S_in + y_own;  S_out = decay * S_in + b_tail^T (w_in S_in) + add."""
    a_next = F.pad(a[..., 1:, :], (0, 0, 0, 1))    # row t' holds a_{t'+1}, read through P[t', s]
    mix = _pair_mixes(torch.stack((r, a_next), dim=-3), torch.stack((b, k), dim=-3),
                      log_decay.unsqueeze(-3))
    remove = F.pad(mix[..., 1, :, :-1, :], (0, 0, 1, 0))                # back to rows t = t' + 1
    (rb, rk), (ab, ak) = mix[..., 0, :, :, :].unbind(-3), remove.unbind(-3)
    before = F.pad(log_decay, (0, 0, 1, 0))[..., :-1, :].cumsum(dim=-2)          # (start, t-1]
    through = log_decay.cumsum(dim=-2)                                            # (start, t]
    after = _after(log_decay)                                                    # (s, end]
    c, vv = r.shape[-2], v.shape[-1]
    eye = torch.eye(c, dtype=r.dtype, device=r.device)
    rhs = torch.cat((ak @ v, a * torch.exp(before)), dim=-1)
    u = torch.linalg.solve_triangular(eye - ab, rhs, upper=False, unitriangular=True)
    u_v, w_in = u.split((vv, u.shape[-1] - vv), dim=-1)                           # u = u_v + w_in S_in
    b_tail, k_tail = b * torch.exp(after), k * torch.exp(after)
    add = b_tail.transpose(-1, -2) @ u_v + k_tail.transpose(-1, -2) @ v
    query = r * torch.exp(through) + rb @ w_in
    y_own = rb @ u_v + rk @ v
    decay = torch.exp(through[..., -1, :]).unsqueeze(-1)                          # [.., K, 1]
    return query, y_own, decay, b_tail.transpose(-1, -2), w_in, add


def wkv7_chunked(r, w, k, v, a, b, state=None, chunk_size: int = 16):
    """Same contract as `wkv7_naive`. The padded tail has zero r, k, a, b and no decay, so the final
    state is exactly the state after token T. Every decay factor is <= 1; the only growth is in the
    triangular solve, i.e. in the delta-rule terms themselves, bounded for RWKV-7's a = -kk,
    b = kk * alpha (|kk| = 1, alpha in (0, 1))."""
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"wkv7: chunk_size must be a power of two, got {chunk_size}")
    bsz, t, h, kk = r.shape
    vv, out_dtype, c = v.shape[-1], r.dtype, chunk_size
    acc = torch.float64 if r.dtype == torch.float64 else torch.float32  # fp32 at least
    r_c, k_c, v_c, a_c, b_c = (_to_chunks(x, c, acc) for x in (r, k, v, a, b))
    log_decay = _to_chunks(-torch.exp(w.to(acc).clamp(max=MAX_LOG_LOG_DECAY)), c, acc)  # <= 0; pad 0
    query, y_own, decay, b_tail_t, w_in, add = _chunk_terms(r_c, k_c, v_c, a_c, b_c, log_decay)
    s = (torch.zeros(bsz, h, kk, vv, dtype=acc, device=r.device)
         if state is None else state.to(acc))
    entering = []
    # unbound once: indexing chunk i in the loop would make autograd zero-fill a whole-sequence
    # gradient per chunk
    for dec, b_t, w_i, add_i in zip(*(x.unbind(2) for x in (decay, b_tail_t, w_in, add))):
        entering.append(s)
        s = dec * s + b_t @ (w_i @ s) + add_i
    y = query @ torch.stack(entering, dim=2) + y_own
    y = y.reshape(bsz, h, -1, vv)[:, :, :t].transpose(1, 2)
    return y.to(out_dtype), s
