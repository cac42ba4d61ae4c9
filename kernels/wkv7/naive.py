"""WKV7 reference: the recurrence written out one token at a time (slow, obviously correct)."""
from __future__ import annotations

import torch


def wkv7_naive(r, w, k, v, a, b, state=None):
    """r, w, k, v, a, b [B, T, H, K]; state [B, H, K, K] (None: zeros).

    S_t = diag(exp(-exp(w_t))) S_{t-1} + b_t^T (a_t S_{t-1}) + k_t^T v_t;  y_t = r_t S_t.
    Returns y [B, T, H, K] in r's dtype and the final state in fp32 (fp64 for fp64 inputs).
    """
    bsz, _, h, kk = r.shape
    out_dtype = r.dtype
    acc = torch.float64 if r.dtype == torch.float64 else torch.float32  # fp32 at least
    s = (torch.zeros(bsz, h, kk, v.shape[-1], dtype=acc, device=r.device)
         if state is None else state.to(acc))
    r, k, v, a, b = (x.to(acc) for x in (r, k, v, a, b))
    decay = torch.exp(-torch.exp(w.to(acc)))
    ys = []
    for r_i, d_i, k_i, v_i, a_i, b_i in zip(*(x.unbind(1) for x in (r, decay, k, v, a, b))):
        removed = torch.einsum("bhk,bhkv->bhv", a_i, s)                  # a_t S_{t-1}
        s = (d_i[..., None] * s + b_i[..., None] * removed[:, :, None, :]
             + k_i[..., None] * v_i[:, :, None, :])
        ys.append(torch.einsum("bhk,bhkv->bhv", r_i, s))
    return torch.stack(ys, dim=1).to(out_dtype), s
