"""Linear layer + mean cross-entropy, chunked over tokens so [N, V] logits never exist at once.

The forward does all the work: per chunk of rows, logits = h W^T, a row function turns them in
place into d(row loss)/d(logits), and the chunk's grad_h and its share of grad_W follow from
two matmuls. The backward scales the stored gradients by (incoming gradient) / n_valid in fp32,
late, so that fp16 per-row gradients do not underflow before the sums.

The L2Wrap logit penalty (`l2wrap` > 0; see l2wrap.py) adds l2wrap/N times each row's largest
logit to that logit's gradient, scaled by the incoming gradient like the loss. The row function
reports each row's max and argmax from the pass it already makes; the penalty's share of grad_h
(a gather of head rows) is kept apart, and its share of grad_W is added in the backward from the
saved hidden rows, so no extra pass over [N, V] logits is made.
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
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows, rows_fn, want_h, want_w,
                l2wrap=0.0):
        n = hidden.shape[0]
        n_valid = (targets != ignore_index).sum()
        write_grad = want_h or want_w
        penalty = l2wrap > 0 and write_grad
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = (torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
                  if want_w else None)
        row_max = torch.empty(n, dtype=torch.float32, device=hidden.device) if penalty else None
        row_arg = torch.empty(n, dtype=torch.int64, device=hidden.device) if penalty else None
        pen_h = torch.empty_like(hidden) if penalty and want_h else None
        for start in range(0, n, chunk_rows):
            rows = slice(start, min(n, start + chunk_rows))
            h_c = hidden[rows]
            logits = h_c @ weight.t()
            if penalty:
                rows_fn(logits, targets[rows], losses[rows], ignore_index, write_grad,
                        row_max[rows], row_arg[rows])
            else:
                rows_fn(logits, targets[rows], losses[rows], ignore_index, write_grad)
            if want_h:
                torch.mm(logits, weight, out=grad_h[rows])
            if pen_h is not None:  # d(max·c)/dh = c·W[argmax]
                pen_h[rows] = (weight[row_arg[rows]].float()
                               * (row_max[rows] * (l2wrap / n))[:, None]).to(hidden.dtype)
            if want_w and weight.dtype == torch.float32:
                grad_w.addmm_(logits.t(), h_c)
            elif want_w:
                grad_w.add_(logits.t() @ h_c)
        coef = row_max * (l2wrap / n) if penalty and want_w else None
        ctx.save_for_backward(grad_h, grad_w, n_valid, pen_h, coef,
                              row_arg if coef is not None else None,
                              hidden if coef is not None else None)
        ctx.weight_dtype = weight.dtype
        return losses.sum() / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, n_valid, pen_h, coef, row_arg, hidden = ctx.saved_tensors
        factor = grad_loss.float() / n_valid.clamp(min=1)
        dh = None if grad_h is None else grad_h * factor
        if pen_h is not None:
            dh = dh + pen_h * grad_loss.to(pen_h.dtype)
        dw = None
        if grad_w is not None:
            dw = grad_w * factor
            if coef is not None:  # d(max·c)/dW[argmax] = c·h
                dw.index_add_(0, row_arg, hidden.float() * (coef * grad_loss.float())[:, None])
            dw = dw.to(ctx.weight_dtype)
        return dh, dw, None, None, None, None, None, None, None
