"""Linear layer + mean cross-entropy, chunked over tokens so [N, V] logits never exist at once.

The forward does all the work: per chunk of rows, logits = h W^T, a row function turns them in
place into d(row loss)/d(logits), and the chunk's grad_h and its share of grad_W follow from
two matmuls. The backward scales the stored gradients by (incoming gradient) / n_valid in fp32,
late, so that fp16 per-row gradients do not underflow before the sums.
"""
from __future__ import annotations

import torch

LOGIT_BUDGET = 1 << 26  # elements of the [rows, V] logits block held at once


def default_chunk_rows(n_rows: int, vocab: int) -> int:
    """Rows per chunk so that one logits block holds about LOGIT_BUDGET elements."""
    return max(1, min(n_rows, LOGIT_BUDGET // max(vocab, 1)))


class LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(hidden_i W^T, target_i) over targets != ignore_index; grads for hidden and W."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows, rows_fn, want_h, want_w):
        n = hidden.shape[0]
        n_valid = (targets != ignore_index).sum()
        write_grad = want_h or want_w
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = (torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
                  if want_w else None)
        for start in range(0, n, chunk_rows):
            rows = slice(start, min(n, start + chunk_rows))
            h_c = hidden[rows]
            logits = h_c @ weight.t()
            rows_fn(logits, targets[rows], losses[rows], ignore_index, write_grad)
            if want_h:
                torch.mm(logits, weight, out=grad_h[rows])
            if want_w and weight.dtype == torch.float32:
                grad_w.addmm_(logits.t(), h_c)
            elif want_w:
                grad_w.add_(logits.t() @ h_c)
        ctx.save_for_backward(grad_h, grad_w, n_valid)
        ctx.weight_dtype = weight.dtype
        return losses.sum() / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, n_valid = ctx.saved_tensors
        factor = grad_loss.float() / n_valid.clamp(min=1)
        dh = None if grad_h is None else grad_h * factor
        dw = None if grad_w is None else (grad_w * factor).to(ctx.weight_dtype)
        return dh, dw, None, None, None, None, None, None
