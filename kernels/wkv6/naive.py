"""WKV6 reference: the recurrence written out one token at a time (slow, obviously correct)."""
from __future__ import annotations

import torch


def wkv6_naive(r, k, v, w, u=None, state=None):
    """r, k, w [B, T, H, K]; v [B, T, H, V]; u [H, K] or None; state [B, H, K, V].

    S_t = diag(exp(-exp(w_t))) S_{t-1} + k_t^T v_t;  y_t = r_t (S_{t-1} + diag(u) k_t^T v_t).
    Returns y [B, T, H, V] in v's dtype and the final state in fp32 (fp64 for fp64 inputs).
    """
    b, t, h, kk = r.shape
    out_dtype = v.dtype
    acc = torch.float64 if v.dtype == torch.float64 else torch.float32  # fp32 at least
    s = (torch.zeros(b, h, kk, v.shape[-1], dtype=acc, device=r.device)
         if state is None else state.to(acc))
    r, k, v, decay = r.to(acc), k.to(acc), v.to(acc), torch.exp(-torch.exp(w.to(acc)))
    ys = []
    for i in range(t):
        kv = k[:, i, :, :, None] * v[:, i, :, None, :]  # [B, H, K, V]
        read = s if u is None else s + u.to(acc)[None, :, :, None] * kv
        ys.append(torch.einsum("bhk,bhkv->bhv", r[:, i], read))
        s = decay[:, i, :, :, None] * s + kv
    return torch.stack(ys, dim=1).to(out_dtype), s
