"""Bone/Bat fine-tuning: the wrappers' maths, peft.* validation, and a tiny Finch run whose
frozen tensors stay bitwise, whose merged change has the block-affine structure, that resumes
exactly and exports merged and unmerged to the same logits."""
import re

import pytest
import torch
from torch import nn

from model import ModelConfig, build_model, load_exported, save_exported
from model.bone import BatLinear, BoneLinear, merge, merge_state_dict, wrap
from pipeline.config import load_run_config
from pipeline.runs import consolidated_state_dict, tag_for
from pipeline.training.init_from import checkpoint_weights
from pipeline.training import peft

from pipeline_helpers import make_data_dir, metrics, run_train
from test_bone_checkpoints import model_file_tensors

R = 16
TINY_FINCH = dict(arch="finch", n_layer=3, n_embd=64, head_size=16, ctx_len=32, mix_lora_rank=8,
                  decay_lora_rank=8, vocab_size=300)


def _linear(out, inp, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(inp, out, bias=False)
    return lin


@pytest.mark.parametrize("inp", [32, 40])  # 40: not a multiple of r, the input is zero-padded
def test_bone_delta_is_d_at_i_mod_r(inp):
    lin = _linear(24, inp)
    w = lin.weight.detach().clone()
    bone = BoneLinear(lin, 16)
    with torch.no_grad():
        bone.bone.normal_()
    expect = torch.empty(24, inp)
    for o in range(24):
        for i in range(inp):
            expect[o, i] = bone.bone[i % 16, o]
    assert torch.equal(bone.delta(), expect)
    x = torch.randn(3, 5, inp)
    torch.testing.assert_close(bone(x), x @ (w + expect).t())


def test_bat_delta_is_block_affine_and_merges():
    lin = _linear(32, 48)
    w = lin.weight.detach().clone()
    bat = BatLinear(lin, 16)
    with torch.no_grad():
        bat.bat.normal_()
    delta = bat.delta()
    for a in range(2):
        for b in range(3):
            blk = w[a * 16:(a + 1) * 16, b * 16:(b + 1) * 16]
            torch.testing.assert_close(delta[a * 16:(a + 1) * 16, b * 16:(b + 1) * 16],
                                       blk @ bat.bat[b] + bat.bat[b])
    x = torch.randn(2, 48)
    holder = nn.Sequential(bat)
    y = holder(x)
    merge(holder)
    assert type(holder[0]) is nn.Linear
    torch.testing.assert_close(holder(x), y)


def test_wrappers_start_as_the_base_and_keep_the_weight_name():
    model = build_model(ModelConfig(**TINY_FINCH))
    x = torch.randint(0, 300, (1, 8))
    before, _ = model(x)
    names = {n for n, _ in model.named_parameters()}
    added = wrap(model, "bat", R, ["att.key", "ffn.value"])
    after, _ = model(x)
    assert torch.equal(before, after)
    assert {n for n, _ in model.named_parameters()} == names | set(added)
    assert "blocks.0.att.key.bat" in added and "blocks.2.ffn.value.bat" in added


@pytest.mark.parametrize("override, message", [
    (["peft.method=lora"], "peft.method='lora'"),
    (["peft.method=bat", "peft.r=24"], "peft.r=24"),
    (["peft.method=bone", "peft.r=65"], "peft.r=65"),
    (["peft.method=bat", "peft.targets=[att.nope]"], "peft.targets: 'att.nope'"),
    (["peft.method=bat", "peft.train_also=[nothing*]"], "peft.train_also[0]='nothing*'"),
])
def test_bad_peft_keys_are_named(override, message):
    model = [f"model.{k}={v}" for k, v in TINY_FINCH.items()]
    with pytest.raises(ValueError, match=re.escape(message)):
        load_run_config(None, [*model, f"peft.r={R}", *override])


def expected_count(model: nn.Module, method: str, r: int) -> int:
    """sum over targets of (in/r)·r·r (bat) or r·out (bone), plus the mixers' non-Linear, non-norm
    parameters and every norm's parameters."""
    count = 0
    for name, m in model.named_modules():
        if type(m) is nn.Linear and name.startswith("blocks."):
            count += (m.in_features // r) * r * r if method == "bat" else r * m.out_features
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
            count += sum(p.numel() for p in m.parameters(recurse=False))
        elif ".att" in f".{name}" or ".ffn" in f".{name}":
            count += sum(p.numel() for p in m.parameters(recurse=False))
    return count


@pytest.mark.parametrize("method", ["bone", "bat"])
def test_trainable_count_matches_the_formula(method):
    model = build_model(ModelConfig(**TINY_FINCH))
    cfg = peft.PeftConfig(method=method, r=R)
    expect = expected_count(model, method, R)
    peft.attach(model, cfg)
    assert peft.restrict(model, cfg) == expect


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bone")
    make_data_dir(root / "data", docs_per_shard=(30, 30), val_docs=(10,))
    save_exported(build_model(ModelConfig(**TINY_FINCH)).state_dict(), ModelConfig(**TINY_FINCH),
                  root / "base")
    return root


def args(root, name):
    return [f"train.run_name={name}", "model.arch=finch", "peft.method=bat", f"peft.r={R}",
            f"train.init_from={root / 'base'}", "train.zero_stage=2", "train.grad_ckpt=true",
            "train.max_steps=4", "train.save_every=2", "train.export=false"]


@pytest.mark.slow
def test_bat_run_freezes_the_rest_resumes_exactly_and_exports(runs):
    run_train(runs, *args(runs, "bat"))
    base = load_exported(runs / "base").state_dict()
    sd = checkpoint_weights(runs / "runs/bat/checkpoints", tag_for(4))
    model = build_model(ModelConfig(**TINY_FINCH))
    cfg = peft.PeftConfig(method="bat", r=R)
    trained = peft.attach(model, cfg)
    also = trained - {n for n in sd if n.endswith(".bat")}
    assert set(consolidated_state_dict(runs / "runs/bat/checkpoints", tag_for(4), 2)) == trained
    assert set(model_file_tensors(runs / "runs/bat/checkpoints" / tag_for(4))) <= trained
    assert any(sd[n].abs().sum() > 0 for n in sd if n.endswith(".bat"))
    for name, t in base.items():
        if name not in also:
            assert torch.equal(sd[name], t), name
    merged = merge_state_dict(sd)
    for name in (n for n in sd if n.endswith(".bat")):
        w, b = base[name[:-4] + ".weight"], sd[name]
        delta = merged[name[:-4] + ".weight"] - w
        for a in range(w.shape[0] // R):
            for c in range(w.shape[1] // R):
                blk = (slice(a * R, (a + 1) * R), slice(c * R, (c + 1) * R))
                torch.testing.assert_close(delta[blk], w[blk] @ b[c] + b[c], atol=1e-6, rtol=1e-5)
    log = metrics(runs, "bat")
    assert log[-1]["trainable_params"] == expected_count(build_model(ModelConfig(**TINY_FINCH)), "bat", R)

    from pipeline.export import export
    export(runs / "runs/bat", runs / "merged")
    export(runs / "runs/bat", runs / "unmerged", unmerged=True)
    plain, kept = load_exported(runs / "merged"), load_exported(runs / "unmerged")
    assert not any(n.endswith(".bat") for n, _ in plain.named_parameters())
    assert any(isinstance(m, BatLinear) for m in kept.modules())
    x = torch.randint(0, 300, (2, 16))
    torch.testing.assert_close(plain(x)[0], kept(x)[0], atol=1e-5, rtol=1e-5)

    proc = run_train(runs, *args(runs, "cut"), check=False, env={"GOLDFINCH_FAULTS": "kill_after_step:3"})
    assert proc.returncode != 0
    run_train(runs, *args(runs, "cut"))
    assert [r["loss"] for r in metrics(runs, "cut")] == [r["loss"] for r in log]
    cut = checkpoint_weights(runs / "runs/cut/checkpoints", tag_for(4))
    assert all(torch.equal(cut[n], sd[n]) for n in sd)


@pytest.mark.parametrize("method", ["bone", "bat"])
def test_bf16_backward_reaches_only_what_peft_trains(method):
    model = build_model(ModelConfig(**TINY_FINCH), dtype=torch.bfloat16)
    cfg = peft.PeftConfig(method=method, r=R, train_also=[])
    model.requires_grad_(True)
    peft.attach(model, cfg)
    assert peft.restrict(model, cfg) == sum(m.bone.numel() if method == "bone" else m.bat.numel()
                                            for m in model.modules()
                                            if isinstance(m, (BoneLinear, BatLinear)))
    logits, _ = model(torch.randint(0, 300, (2, 8)))
    logits.float().square().mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.endswith(f".{method}"), name
