"""DeepSpeed engine construction: ZeRO stage, offload, precision and the AdamW optimizer."""
from __future__ import annotations

import torch

from .optim import FiniteAdamW, param_groups


def deepspeed_config(train, world: int, universal: bool = False) -> dict:
    """The DeepSpeed JSON config for the `train` section (batch sizes are per rank); `universal`:
    the engine will load a universal checkpoint (one written by another number of ranks)."""
    zero: dict = {"stage": train.zero_stage}
    if train.offload_optimizer and train.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if train.offload_params and train.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch * train.grad_accum * world,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": train.precision == "bf16"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
        "checkpoint": {"load_universal": universal},
    }


def build_optimizer(model: torch.nn.Module, train, carried: set[str] | None = None,
                    lr_scale: float = 1.0):
    groups = param_groups(model, train.weight_decay, carried, lr_scale)
    betas = (train.beta1, train.beta2)
    if train.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        return DeepSpeedCPUAdam(groups, lr=train.lr, betas=betas, eps=train.eps, adamw_mode=True)
    # ZeRO 1-3 skip non-finite steps themselves; only stage 0 needs the guarded optimizer
    adamw = FiniteAdamW if train.zero_stage == 0 else torch.optim.AdamW
    return adamw(groups, lr=train.lr, betas=betas, eps=train.eps)


def build_engine(model: torch.nn.Module, train, world: int, carried: set[str] | None = None,
                 lr_scale: float = 1.0, universal: bool = False):
    """Wrap the model in a DeepSpeed engine whose optimizer holds only trainable parameters."""
    import deepspeed

    if train.zero_stage == 3:
        # the fused loss and distillation's KL read head.weight inside the model's own forward
        deepspeed.zero.register_external_parameter(model, model.head.weight)
    optimizer = build_optimizer(model, train, carried, lr_scale)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=deepspeed_config(train, world, universal))
    return engine
