"""Per-row cross-entropy on a block of logits in Triton, writing d(loss)/d(logits) in place.

One program per row streams the vocabulary in blocks twice: an online log-sum-exp (running max
and rescaled sum, so nothing overflows), then softmax - onehot written over the logits (zeros on
ignored rows). The 1/n_valid of the mean is applied later, in fp32.
"""
import triton
import triton.language as tl


@triton.jit
def ce_rows_kernel(logits_ptr, targets_ptr, loss_ptr, row_stride, n_vocab, ignore_index,
                   BLOCK: tl.constexpr, WRITE_GRAD: tl.constexpr):
    """loss[row] = logsumexp(x) - x[target] (0 where ignored); optionally x <- dloss/dx."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * row_stride
    target = tl.load(targets_ptr + row)
    cols = tl.arange(0, BLOCK)
    run_max = tl.sum(tl.zeros([BLOCK], dtype=tl.float32), 0) - float("inf")
    run_sum = tl.sum(tl.zeros([BLOCK], dtype=tl.float32), 0)
    for start in range(0, n_vocab, BLOCK):
        x = tl.load(base + start + cols, mask=start + cols < n_vocab, other=float("-inf"))
        x = x.to(tl.float32)
        new_max = tl.maximum(run_max, tl.max(x, 0))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(x - new_max), 0)
        run_max = new_max
    lse = run_max + tl.log(run_sum)
    valid = target != ignore_index
    x_target = tl.load(base + target, mask=valid, other=0.0).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - x_target, 0.0))
    if WRITE_GRAD:
        keep = tl.where(valid, 1.0, 0.0)
        for start in range(0, n_vocab, BLOCK):
            in_range = start + cols < n_vocab
            x = tl.load(base + start + cols, mask=in_range, other=0.0).to(tl.float32)
            grad = (tl.exp(x - lse) - tl.where(start + cols == target, 1.0, 0.0)) * keep
            tl.store(base + start + cols, grad.to(logits_ptr.dtype.element_ty), mask=in_range)


def _launch(kernel, grid, *args, **consts):
    kernel[grid](*args, **consts)


def ce_rows_triton(logits, targets, losses, ignore_index: int, write_grad: bool,
                   launch=_launch) -> None:
    """Fill losses [rows] fp32; if write_grad, overwrite logits [rows, V] with d(row loss)/dx.
    (`launch` lets `kernels.compile_check` record the call instead of running it.)"""
    rows, vocab = logits.shape
    block = min(4096, triton.next_power_of_2(vocab))
    launch(ce_rows_kernel, (rows,), logits, targets, losses, logits.stride(0), vocab, ignore_index,
           BLOCK=block, WRITE_GRAD=write_grad, num_warps=8 if block >= 2048 else 4)
