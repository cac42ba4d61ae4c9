"""AdamW groups against the reference's rules (its get_optim_groups with layerwise_lr=1 and
train_stage=3, as the minipile configs run), restated here over the reference's parameter names."""
import pytest
import torch

from model import ModelConfig, build_model
from model.convert import to_reference
from pipeline.training.optim import param_groups

WD = 1e-3


def reference_class(name: str, shape: tuple[int, ...]) -> str:
    """Which of the reference's groups a parameter of that name and shape joins."""
    if "_w1" in name or "_w2" in name:
        return "1x"
    if "time_mix" in name or "time_maa" in name:
        return "1x"
    if "time_decay" in name or "time_daaaa" in name:
        return "2x"
    if "time_faaaa" in name:
        return "1x"
    if "time_first" in name:
        return "3x"
    if name.endswith(".bias"):
        return "1x"
    if len([d for d in shape if d != 1]) >= 2:  # the reference's len(p.squeeze().shape)
        return "decay"
    return "1x"


def our_class(group: dict) -> str:
    if group["weight_decay"] > 0:
        assert group["lr_scale"] == 1.0
        return "decay"
    return f"{group['lr_scale']:g}x"


def expected_classes(cfg: ModelConfig, model) -> dict[str, str]:
    """Our name -> the reference's group, found by converting tensors that hold their own index:
    conversion never does arithmetic, so each reference tensor names the tensor of ours it came from."""
    names = list(model.state_dict())
    tagged = {n: torch.full(t.shape, float(i)) for i, (n, t) in enumerate(model.state_dict().items())}
    theirs: dict[str, set[str]] = {}
    for ref_name, t in to_reference(cfg, tagged).items():
        for index in t.unique().tolist():
            theirs.setdefault(names[int(index)], set()).add(reference_class(ref_name, tuple(t.shape)))
    assert all(len(c) == 1 for c in theirs.values()), theirs
    return {n: c.pop() for n, c in theirs.items()}


CASES = {
    "goldfinch": dict(arch="goldfinch"),
    "goldfinch-upgrade": dict(arch="goldfinch", lower="finch", gold_ratio=3),
    "finch": dict(arch="finch", lower="finch"),
    "finch-c2": dict(arch="finch", lower="finch_c2"),
    "llama": dict(arch="llama"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_groups_follow_the_reference(case):
    cfg = ModelConfig(n_layer=3, n_embd=64, head_size=32, ctx_len=16, vocab_size=96,
                      mix_lora_rank=8, decay_lora_rank=8, **CASES[case])
    torch.manual_seed(0)
    model = build_model(cfg)
    groups = param_groups(model, WD)
    ours = {n: our_class(g) for g in groups for n in g["names"]}
    assert set(ours) == {n for n, _ in model.named_parameters()}
    expected = expected_classes(cfg, model)
    wrong = {n: (ours[n], expected[n]) for n in ours if ours[n] != expected[n]}
    assert not wrong, wrong
    assert all(g["weight_decay"] in (0.0, WD) for g in groups)


def test_decided_by_module_type_and_frozen_parameters_left_out():
    cfg = ModelConfig(arch="goldfinch", n_layer=3, n_embd=64, head_size=32, ctx_len=16,
                      vocab_size=96, mix_lora_rank=8, decay_lora_rank=8)
    model = build_model(cfg)
    # a raw 2-D parameter (as RWKV-7's w1/w2/a1 LoRAs are) gets no decay without being listed
    model.blocks[0].att.register_parameter("w1", torch.nn.Parameter(torch.zeros(64, 8)))
    model.blocks[0].att.register_parameter("w0", torch.nn.Parameter(torch.zeros(64)))
    model.emb.weight.requires_grad_(False)
    by_name = {n: g for g in param_groups(model, WD, carried={"head.weight"}, lr_scale=0.5)
               for n in g["names"]}
    assert by_name["blocks.0.att.w1"]["weight_decay"] == 0.0
    assert by_name["blocks.0.att.w0"]["lr_scale"] == 1.0  # 2x of the phase's 0.5
    assert by_name["blocks.0.att.decay_base"]["lr_scale"] == 1.0
    assert by_name["blocks.0.att.mix.mu"]["lr_scale"] == 0.5
    assert by_name["head.weight"]["carried"] and by_name["head.weight"]["weight_decay"] == WD
    assert by_name["kv_compression.expand.weight"]["weight_decay"] == WD
    assert "emb.weight" not in by_name
