"""WKV6 in chunked matrix form, in plain torch: fast on CPU, differentiable by autograd.

Within a chunk of C tokens let A_t be the inclusive cumulative log-decay (A_t <= A_{t-1} <= 0).
Then, with S_in the state entering the chunk,
    y_t   = (r_t * e^{A_{t-1}}) S_in + sum_{s<t} (sum_k r_tk k_sk e^{A_{t-1,k} - A_{s,k}}) v_s + bonus
    S_out = e^{A_{C-1}} * S_in + sum_s (k_s * e^{A_{C-1} - A_s})^T v_s
Every exponent above is <= 0, so no cumulative decay is ever divided by: strong decays underflow
to zero instead of overflowing. Each exponent is also summed directly over its own window of
log-decays (prefix, suffix and pair sums), never taken as a difference of two cumulative sums:
all log-decays share a sign, so those sums cannot cancel, and a very strong decay (-exp(w) in the
millions, or -inf) earlier in a chunk leaves the later windows exact. The chunk-to-chunk scan is a
short loop over T/C chunks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAIR_BUDGET = 1 << 21  # elements of the [.., C, C, K] pair tensor built at once: 8 MB, cache-sized
# exp(w) above this is a decay of exactly zero in any float type; capping it keeps -exp(w) finite,
# so no inf reaches autograd (whose 0 * inf would be NaN)
MAX_LOG_LOG_DECAY = 80.0


def _to_chunks(x: torch.Tensor, chunk: int, acc: torch.dtype) -> torch.Tensor:
    """[B, T, H, X] -> [B, H, N, C, X] in the accumulation dtype, zero-padded to whole chunks."""
    b, t, h, d = x.shape
    x = x.to(acc).transpose(1, 2)
    pad = (-t) % chunk
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(b, h, (t + pad) // chunk, chunk, d)


def wkv6_chunked(r, k, v, w, u=None, state=None, chunk_size: int = 16):
    """Same contract as `wkv6_naive`; the padded tail has zero keys and no decay, so the final
    state is exactly the state after token T."""
    b, t, h, kk = r.shape
    vv, out_dtype, c = v.shape[-1], v.dtype, chunk_size
    acc = torch.float64 if v.dtype == torch.float64 else torch.float32  # fp32 at least
    r_c, k_c, v_c = _to_chunks(r, c, acc), _to_chunks(k, c, acc), _to_chunks(v, c, acc)
    log_decay = _to_chunks(-torch.exp(w.to(acc).clamp(max=MAX_LOG_LOG_DECAY)), c, acc)  # <= 0; pad 0
    a_incl = log_decay.cumsum(dim=-2)                                        # A_t
    a_excl = F.pad(log_decay, (0, 0, 1, 0))[..., :-1, :].cumsum(dim=-2)      # A_{t-1}
    a_last = a_incl[..., -1:, :]                                             # A_{C-1}
    after = F.pad(log_decay.flip(-2), (0, 0, 1, 0))[..., :-1, :].cumsum(dim=-2).flip(-2)  # A_{C-1} - A_s
    n = r_c.shape[2]

    chunk_kv = (k_c * torch.exp(after)).transpose(-1, -2) @ v_c            # [B, H, N, K, V]
    chunk_decay = torch.exp(a_last).squeeze(-2).unsqueeze(-1)              # [B, H, N, K, 1]
    s = (torch.zeros(b, h, kk, vv, dtype=acc, device=r.device)
         if state is None else state.to(acc))
    entering = []
    for i in range(n):
        entering.append(s)
        s = chunk_decay[:, :, i] * s + chunk_kv[:, :, i]
    y = (r_c * torch.exp(a_excl)) @ torch.stack(entering, dim=2)          # inter-chunk part

    # pair (t, s), s < t, decays over the window (s, t-1]: with t' = t-1 that is (s, t'], t' >= s,
    # a running sum down the rows t' of the log-decays after s; row t' pairs with the query t'+1
    later = torch.ones(c, c, dtype=torch.bool, device=r.device).tril(-1)[..., None]   # [j, s]: j > s
    lower = torch.ones(c, c, dtype=torch.bool, device=r.device).tril(0)[..., None]    # [t', s]: t' >= s
    r_next = F.pad(r_c[..., 1:, :], (0, 0, 0, 1))                                      # r_{t'+1}
    group = max(1, PAIR_BUDGET // max(b * h * c * c * kk, 1))
    intra = []
    for g in range(0, n, group):
        sl = slice(g, g + group)
        window = torch.where(later, log_decay[:, :, sl, :, None, :], 0.0).cumsum(dim=-3)
        pair = torch.exp(torch.where(lower, window, float("-inf")))           # [B,H,G,C(t'),C(s),K]
        scores = torch.einsum("bhgtk,bhgsk,bhgtsk->bhgts", r_next[:, :, sl], k_c[:, :, sl], pair)
        intra.append(F.pad(scores[..., :-1, :], (0, 0, 1, 0)) @ v_c[:, :, sl])  # back to rows t
    y = y + torch.cat(intra, dim=2)

    if u is not None:
        bonus = (r_c * k_c * u.to(acc)[None, :, None, None, :]).sum(-1, keepdim=True)
        y = y + bonus * v_c
    y = y.reshape(b, h, n * c, vv)[:, :, :t].transpose(1, 2)
    return y.to(out_dtype), s
