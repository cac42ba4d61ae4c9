"""Per-row cross-entropy on a block of logits in Triton, writing d(loss)/d(logits) in place.

One program per row streams the vocabulary in blocks twice: an online log-sum-exp (running max
and rescaled sum, so nothing overflows), then softmax - onehot written over the logits (zeros on
ignored rows). The 1/n_valid of the mean is applied later, in fp32. With WRITE_MAX the first pass
also records each row's largest logit and its column, for the L2Wrap logit penalty.
"""
import triton
import triton.language as tl


@triton.jit
def ce_rows_kernel(logits_ptr, targets_ptr, loss_ptr, max_ptr, argmax_ptr, row_stride, n_vocab,
                   ignore_index, BLOCK: tl.constexpr, WRITE_GRAD: tl.constexpr,
                   WRITE_MAX: tl.constexpr):
    """loss[row] = logsumexp(x) - x[target] (0 where ignored); optionally x <- dloss/dx and
    max[row], argmax[row] = the largest logit and its (first) column."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * row_stride
    target = tl.load(targets_ptr + row)
    cols = tl.arange(0, BLOCK)
    run_max = tl.sum(tl.zeros([BLOCK], dtype=tl.float32), 0) - float("inf")
    run_sum = tl.sum(tl.zeros([BLOCK], dtype=tl.float32), 0)
    run_arg = tl.sum(tl.zeros([BLOCK], dtype=tl.int64), 0)
    for start in range(0, n_vocab, BLOCK):
        x = tl.load(base + start + cols, mask=start + cols < n_vocab, other=float("-inf"))
        x = x.to(tl.float32)
        if WRITE_MAX:  # a later block wins only if strictly larger: the first maximum is kept
            run_arg = tl.where(tl.max(x, 0) > run_max, start + tl.argmax(x, 0), run_arg)
        new_max = tl.maximum(run_max, tl.max(x, 0))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(x - new_max), 0)
        run_max = new_max
    lse = run_max + tl.log(run_sum)
    if WRITE_MAX:
        tl.store(max_ptr + row, run_max)
        tl.store(argmax_ptr + row, run_arg)
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
                   row_max=None, row_argmax=None, launch=_launch) -> None:
    """Fill losses [rows] fp32; if write_grad, overwrite logits [rows, V] with d(row loss)/dx;
    given row_max [rows] fp32 and row_argmax [rows] int64, fill them too.
    (`launch` lets `kernels.compile_check` record the call instead of running it.)"""
    rows, vocab = logits.shape
    block = min(4096, triton.next_power_of_2(vocab))
    want_max = row_max is not None
    launch(ce_rows_kernel, (rows,), logits, targets, losses, row_max if want_max else losses,
           row_argmax if want_max else targets, logits.stride(0), vocab, ignore_index,
           BLOCK=block, WRITE_GRAD=write_grad, WRITE_MAX=want_max,
           num_warps=8 if block >= 2048 else 4)
