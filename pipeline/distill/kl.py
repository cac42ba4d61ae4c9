"""KL(teacher || student) over the vocabulary, chunked over tokens.

Neither the teacher's nor the student's [tokens x vocab] logits are ever whole: each chunk of
tokens gets its logits from the final features and the heads, adds its KL, and is dropped; the
backward pass recomputes them chunk by chunk (as the fused cross-entropy does).
"""
from __future__ import annotations

import torch


def _chunk_probs(h_s, w_s, h_t, w_t, temperature: float):
    """(student log-probs, teacher log-probs) of one chunk at the temperature, in fp32."""
    z_s = (h_s @ w_s.t()).float() / temperature
    z_t = (h_t @ w_t.t()).float() / temperature
    return torch.log_softmax(z_s, dim=-1), torch.log_softmax(z_t, dim=-1)


class _ChunkedKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, temperature: float, chunk: int):
        total = torch.zeros((), dtype=torch.float32, device=h_s.device)
        for i in range(0, h_s.shape[0], chunk):
            lp_s, lp_t = _chunk_probs(h_s[i:i + chunk], w_s, h_t[i:i + chunk], w_t, temperature)
            total += (lp_t.exp() * (lp_t - lp_s)).sum()
        ctx.save_for_backward(h_s, w_s, h_t, w_t)
        ctx.temperature, ctx.chunk = temperature, chunk
        return total * temperature**2 / h_s.shape[0]

    @staticmethod
    def backward(ctx, grad):
        h_s, w_s, h_t, w_t = ctx.saved_tensors
        t, n = ctx.temperature, h_s.shape[0]
        grad_h = torch.empty_like(h_s) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(w_s, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for i in range(0, n, ctx.chunk):
            part = slice(i, i + ctx.chunk)
            lp_s, lp_t = _chunk_probs(h_s[part], w_s, h_t[part], w_t, t)
            # d/dz of T^2/n * KL(softmax(z_t/T) || softmax(z/T)) = T/n * (p_s - p_t)
            dz = ((lp_s.exp() - lp_t.exp()) * (grad * t / n)).to(w_s.dtype)
            if grad_h is not None:
                grad_h[part] = dz @ w_s
            if grad_w is not None:
                grad_w += (dz.t() @ h_s[part]).float()
        return grad_h, None if grad_w is None else grad_w.to(w_s.dtype), None, None, None, None


def chunked_kl(h_s: torch.Tensor, w_s: torch.Tensor, h_t: torch.Tensor, w_t: torch.Tensor,
               temperature: float = 1.0, chunk: int = 1024) -> torch.Tensor:
    """Mean over tokens of KL(p_t || p_s), p = softmax(h @ w^T / T), times T^2 (so that the
    gradient's size does not shrink as T grows; T = 1 is ARWKV's and RADLADS' setting).

    h_s [N, C] and w_s [V, C] are the student's final features and head; h_t [N, C_t] and w_t
    [V_t, C_t] the teacher's, with V_t >= V: a teacher's rows past the student's vocabulary (a
    padded vocabulary) are dropped, as ARWKV does.
    """
    if h_s.shape[0] != h_t.shape[0]:
        raise ValueError(f"chunked_kl: {h_s.shape[0]} student tokens but {h_t.shape[0]} teacher tokens")
    if w_t.shape[0] < w_s.shape[0]:
        raise ValueError(f"chunked_kl: the teacher's vocabulary ({w_t.shape[0]}) is smaller than the "
                         f"student's ({w_s.shape[0]})")
    return _ChunkedKL.apply(h_s, w_s, h_t.detach(), w_t[:w_s.shape[0]].detach(), float(temperature),
                            int(chunk))
