"""Slim Bone/Bat checkpoints (only what PEFT trains, plus the base's digest) at ZeRO 0 and 3, the
refusal of a changed base, the freeze-phase check under PEFT, and merged == unmerged logits for
GOLD and Llama targets."""
import json
import re

import pytest
import torch

from model import ModelConfig, build_model, load_exported, save_exported
from model.bone import merge_state_dict
from pipeline.config import load_run_config
from pipeline.errors import PipelineError
from pipeline.export import export
from pipeline.runs import COMPLETE, consolidated_state_dict, tag_for
from pipeline.training import peft, peft_base
from pipeline.training.init_from import checkpoint_weights, load_matching

from pipeline_helpers import make_data_dir, metrics, run_train

R = 16
TINY_FINCH = dict(arch="finch", n_layer=3, n_embd=64, head_size=16, ctx_len=32, mix_lora_rank=8,
                  decay_lora_rank=8, vocab_size=300)
STAGES = (0, 3)


def bone_args(root, name, stage, base, steps=2):
    return [f"train.run_name={name}", "model.arch=finch", "peft.method=bone", f"peft.r={R}",
            f"train.init_from={base}", f"train.zero_stage={stage}", f"train.max_steps={steps}",
            "train.save_every=2", "train.export=false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bone_slim")
    make_data_dir(root / "data", docs_per_shard=(30, 30), val_docs=(10,))
    save_exported(build_model(ModelConfig(**TINY_FINCH)).state_dict(), ModelConfig(**TINY_FINCH),
                  root / "base")
    for stage in STAGES:
        run_train(root, *bone_args(root, f"z{stage}", stage, root / "base", steps=4))
    cut = bone_args(root, "z3cut", 3, root / "base", steps=4)  # killed after step 3, resumed
    assert run_train(root, *cut, check=False, env={"GOLDFINCH_FAULTS": "kill_after_step:3"}).returncode
    run_train(root, *cut)
    return root


def trained_names() -> set[str]:
    return peft.attach(build_model(ModelConfig(**TINY_FINCH)), peft.PeftConfig(method="bone", r=R))


def model_file_tensors(tag_dir) -> dict[str, torch.Tensor]:
    """The non-empty tensors of a checkpoint's model-states file: the module's state dict, and at
    ZeRO-2/3 the frozen parameters' fragments (a full checkpoint holds the whole base there)."""
    state = torch.load(next(tag_dir.glob("*model_states.pt")), map_location="cpu", weights_only=True)
    return {name: t for key in ("module", *peft_base.FROZEN_ENTRIES)
            for name, t in (state.get(key) or {}).items() if torch.is_tensor(t) and t.numel()}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_checkpoint_holds_only_what_peft_trains(root, stage):
    ckpt_dir = root / f"runs/z{stage}/checkpoints"
    tag_dir = ckpt_dir / tag_for(4)
    assert set(consolidated_state_dict(ckpt_dir, tag_for(4), stage)) == trained_names()
    held = model_file_tensors(tag_dir)
    assert set(held) <= trained_names()
    full_bytes = sum(t.numel() * 4 for t in build_model(ModelConfig(**TINY_FINCH)).state_dict().values())
    assert sum(t.numel() * t.element_size() for t in held.values()) < full_bytes / 3
    marker = json.loads((tag_dir / COMPLETE).read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", marker[peft_base.DIGEST_KEY])
    assert marker[peft_base.SOURCE_KEY] == str(root / "base")

    weights, base = checkpoint_weights(ckpt_dir, tag_for(4)), load_exported(root / "base").state_dict()
    for name, t in base.items():
        if name not in trained_names():
            assert torch.equal(weights[name], t), name
    assert all(weights[n].abs().sum() > 0 for n in weights if n.endswith(".bone"))
    export(root / f"runs/z{stage}", root / f"merged{stage}")
    export(root / f"runs/z{stage}", root / f"unmerged{stage}", unmerged=True)
    x = torch.randint(0, 300, (2, 16))
    merged, kept = load_exported(root / f"merged{stage}"), load_exported(root / f"unmerged{stage}")
    torch.testing.assert_close(merged(x)[0], kept(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_zero3_slim_resume_is_bitwise(root):
    assert [r["loss"] for r in metrics(root, "z3cut")] == [r["loss"] for r in metrics(root, "z3")]
    whole = checkpoint_weights(root / "runs/z3/checkpoints", tag_for(4))
    cut = checkpoint_weights(root / "runs/z3cut/checkpoints", tag_for(4))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[n], cut[n]) for n in whole)


@pytest.mark.slow
def test_resume_over_a_changed_base_names_both_digests(root):
    moved = root / "base_moved"
    save_exported(load_exported(root / "base").state_dict(), ModelConfig(**TINY_FINCH), moved)
    args = bone_args(root, "moved", 0, moved, steps=4)
    proc = run_train(root, *args, check=False, env={"GOLDFINCH_FAULTS": "kill_after_step:3"})
    assert proc.returncode != 0
    tag_dir = root / "runs/moved/checkpoints" / tag_for(2)
    before = json.loads((tag_dir / COMPLETE).read_text())[peft_base.DIGEST_KEY]

    torch.manual_seed(7)
    save_exported(build_model(ModelConfig(**TINY_FINCH)).state_dict(), ModelConfig(**TINY_FINCH), moved)
    model = build_model(ModelConfig(**TINY_FINCH))
    cfg = peft.PeftConfig(method="bone", r=R)
    peft.attach(model, cfg)
    load_matching(model, str(moved))
    after = peft_base.identify(model, cfg, str(moved)).digest
    assert after != before
    proc = run_train(root, *args, check=False)
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert before in message and after in message and f"train.init_from={moved}" in message
    with pytest.raises(PipelineError, match=f"{before}.*{after}"):
        checkpoint_weights(root / "runs/moved/checkpoints", tag_for(2))


def config_with(*overrides):
    model = [f"model.{k}={v}" for k, v in TINY_FINCH.items()]
    return load_run_config(None, [*model, "peft.method=bat", f"peft.r={R}", *overrides])


def test_freeze_selector_of_only_frozen_tensors_is_refused():
    with pytest.raises(ValueError, match=re.escape("freeze.phases[1]: selector 'embeddings' picks only")):
        config_with("freeze.phases=[{until_step:2,train:['*.bat']},{train:['*.bat',embeddings]}]")
    cfg = config_with("freeze.phases=[{until_step:2,train:['*.bat']},{train:[norms]}]")
    assert len(cfg.freeze.phases) == 2


TINY_GOLD = dict(arch="goldfinch", n_layer=2, n_embd=64, head_size=16, ctx_len=32, vocab_size=300)
TINY_LLAMA = dict(arch="llama", n_layer=2, n_embd=64, head_size=16, ctx_len=32, vocab_size=300)


@pytest.mark.parametrize("sizes, target", [(TINY_GOLD, "att.query"), (TINY_LLAMA, "att.qkv"),
                                           (TINY_LLAMA, "ffn.down")])
@pytest.mark.parametrize("method", ["bone", "bat"])
def test_gold_and_llama_targets_merge_to_the_same_logits(tmp_path, sizes, target, method):
    cfg = ModelConfig(**sizes)
    model = build_model(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-like base: the init zeroes some outputs (GOLD's att.output)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    names = peft.attach(model, peft.PeftConfig(method=method, r=R, targets=[target]))
    blocks = [n for n in names if n.endswith(f".{method}")]
    assert blocks and all(f".{target}." in n for n in blocks)
    x = torch.randint(0, 300, (2, 16))
    base = model(x)[0]
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in blocks:
                p.normal_(std=0.05)
    unmerged = model(x)[0]
    assert not torch.allclose(unmerged, base, atol=1e-4)
    plain = build_model(cfg)
    plain.load_state_dict(merge_state_dict(model.state_dict()), strict=True)
    torch.testing.assert_close(plain(x)[0], unmerged, atol=1e-5, rtol=1e-5)
    save_exported(model.state_dict(), cfg, tmp_path / "kept")
    torch.testing.assert_close(load_exported(tmp_path / "kept")(x)[0], unmerged, atol=1e-5, rtol=1e-5)
