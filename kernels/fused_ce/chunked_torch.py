"""Per-row cross-entropy on a block of logits in plain torch: the CPU path without Triton."""
import torch


def ce_rows_torch(logits, targets, losses, ignore_index: int, write_grad: bool,
                  row_max=None, row_argmax=None) -> None:
    """Same contract as `ce_rows_triton`: losses [rows] fp32, logits overwritten by
    d(row loss)/d(logits) (zeros on ignored rows); optionally each row's largest logit and column."""
    x = logits.float()
    if row_max is not None:
        torch.max(x, dim=1, out=(row_max, row_argmax))
    lse = torch.logsumexp(x, dim=1)
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    picked = x.gather(1, safe_targets[:, None]).squeeze(1)
    losses.copy_(torch.where(valid, lse - picked, torch.zeros_like(lse)))
    if write_grad:
        grad = torch.exp(x - lse[:, None])
        grad.scatter_add_(1, safe_targets[:, None], -torch.ones_like(lse)[:, None])
        grad.mul_(valid.float()[:, None])
        logits.copy_(grad)
