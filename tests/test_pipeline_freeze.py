"""Phased layer-wise freezing under ZeRO, exact resume across phases, and init_from upgrades."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import ModelConfig, build_model
from pipeline.training import freezing
from pipeline.config import load_run_config

from pipeline_helpers import ROOT, TINY, make_data_dir, metrics, run_train

PHASES = "freeze.phases=[{until_step:3,train:[gold,kv_compression,head]},{train:[all],lr_scale:0.5}]"
NOOP_PHASES = "freeze.phases=[{until_step:2,train:[all]},{train:[all]}]"
QUIET = ["train.export=false"]


def tiny(arch="goldfinch", **kw) -> ModelConfig:
    fields = dict(arch=arch, n_layer=3, n_embd=64, head_size=16, ctx_len=32, vocab_size=300,
                  mix_lora_rank=8, decay_lora_rank=8)
    return ModelConfig(**{**fields, **kw})


def phases(*items) -> freezing.FreezeConfig:
    return freezing.FreezeConfig([freezing.PhaseConfig(**item) for item in items])


# --- selection and validation (no training) ---------------------------------------------------

def test_selectors_pick_the_named_parts():
    model = build_model(tiny())  # blocks 0-1 Finch-C2, block 2 GOLD
    gold = freezing.select(model, "gold")
    assert gold and all(n.startswith("blocks.2.") for n in gold)
    assert {n.split(".")[1] for n in freezing.select(model, "finch")} == {"0", "1"}
    assert freezing.select(model, "embeddings") == {"emb.weight"}
    assert freezing.select(model, "head") == {"head.weight", "ln_out.weight", "ln_out.bias"}
    assert freezing.select(model, "kv_compression") == {"kv_compression.compress.weight",
                                                        "kv_compression.expand.weight"}
    norms = freezing.select(model, "norms")
    assert "ln0.weight" in norms and "blocks.0.att.ln_x.bias" in norms and "head.weight" not in norms
    assert freezing.select(model, "layers:1-2") == {n for n, _ in model.named_parameters()
                                                   if n.startswith(("blocks.1.", "blocks.2."))}
    assert freezing.select(model, "blocks.*.ffn.key.weight") == {f"blocks.{i}.ffn.key.weight"
                                                                for i in range(3)}
    assert freezing.select(model, "all") == {n for n, _ in model.named_parameters()}


def test_apply_sets_requires_grad_and_counts_trainable():
    model = build_model(tiny())
    cfg = phases({"until_step": 3, "train": ["gold"]}, {"train": ["all"]})
    n = freezing.apply(model, cfg, 0)
    assert n == sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks.2."))
    assert not model.emb.weight.requires_grad and model.blocks[2].att.query.weight.requires_grad
    assert freezing.apply(model, cfg, 1) == sum(p.numel() for p in model.parameters())
    assert [freezing.phase_at(cfg, s) for s in range(6)] == [0, 0, 0, 1, 1, 1]
    assert freezing.phase_at(freezing.FreezeConfig(), 7) == 0


@pytest.mark.parametrize("items, arch, needle", [
    ([{"until_step": 3, "train": ["gold"]}, {"train": ["all"]}], "finch", "'gold' matches no parameter"),
    ([{"until_step": 5, "train": ["all"]}, {"until_step": 3, "train": ["all"]}, {"train": ["all"]}],
     "goldfinch", "increasing order"),
    ([{"until_step": 3, "train": []}, {"train": ["all"]}], "goldfinch", "freeze every parameter"),
    ([{"train": ["all"]}, {"train": ["all"]}], "goldfinch", "phases[0].until_step is missing"),
    ([{"until_step": 3, "train": ["all"]}, {"until_step": 5, "train": ["all"]}], "goldfinch",
     "the last phase runs to the end"),
    ([{"until_step": 3, "train": ["layers:1-7"]}, {"train": ["all"]}], "goldfinch", "outside the model"),
    ([{"until_step": 3, "train": ["no.such.*"]}, {"train": ["all"]}], "goldfinch", "'no.such.*'"),
    ([{"until_step": 50, "train": ["gold"]}, {"train": ["all"]}], "goldfinch", "would never run"),
])
def test_bad_phases_are_named(items, arch, needle):
    with pytest.raises(ValueError, match="freeze.phases") as err:
        freezing.validate(phases(*items), build_model(tiny(arch), device="meta"), max_steps=20)
    assert needle in str(err.value)


def test_command_line_phase_syntax_parses():
    cfg = load_run_config(None, ["freeze.phases=[{until_step:8,train:[gold,layers:0-1]},"
                                 "{train:[all],lr_scale:0.5}]"])
    assert cfg.freeze.phases[0].until_step == 8
    assert cfg.freeze.phases[0].train == ["gold", "layers:0-1"]
    assert cfg.freeze.phases[1].lr_scale == 0.5 and cfg.freeze.phases[1].until_step is None


# --- training -----------------------------------------------------------------------------------

@pytest.fixture
def data(tmp_path):
    make_data_dir(tmp_path / "data", docs_per_shard=(30, 30), val_docs=(10,))
    return tmp_path


def losses(tmp_path, run):
    return [r["loss"] for r in metrics(tmp_path, run)]


@pytest.mark.slow
@pytest.mark.parametrize("stage, nproc", [(0, 1), (1, 2), (2, 1), (3, 2)])
def test_a_phase_change_carries_adam_state_exactly(data, shared_data, plain_run, stage, nproc):
    """Switching to a phase that trains the same parameters rebuilds the engine; with moments and
    step counts carried over, the losses are bitwise those of a run without phases. One rank
    compares with the shared plain run of that stage; two ranks (partitioned state) with their own."""
    args = [f"train.zero_stage={stage}", "train.max_steps=5", *QUIET]
    if nproc == 1:
        run_train(shared_data, f"train.run_name=phased-z{stage}", NOOP_PHASES, *args)
        assert losses(shared_data, f"phased-z{stage}") == plain_run(stage)
        return
    run_train(data, "train.run_name=plain", *args, nproc=nproc)
    run_train(data, "train.run_name=phased", NOOP_PHASES, *args, nproc=nproc)
    assert [r["phase"] for r in metrics(data, "phased")] == [0, 0, 1, 1, 1]
    assert losses(data, "phased") == losses(data, "plain")


def _initial_weights(cfg_model: ModelConfig) -> dict:
    """The trainer's initial weights: it seeds with train.seed and builds the model first, on one
    thread (OMP_NUM_THREADS=1 in these runs; orthogonal init rounds differently on more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1337)
        return {k: v.clone() for k, v in build_model(cfg_model).state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def _export(tmp_path, run, step):
    from pipeline.export import export

    out = export(tmp_path / "runs" / run, tmp_path / f"export-{run}-{step}", step)
    return load_file(str(out / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_frozen_parameters_stay_bitwise_and_thaw_in_phase_two(data, stage):
    run_train(data, "train.run_name=fz", f"train.zero_stage={stage}", "train.max_steps=5",
              "train.save_every=3", PHASES, *QUIET, nproc=2)
    start = _initial_weights(tiny())
    model = build_model(tiny(), device="meta")
    trained_first = freezing.trainable_names(
        model, freezing.PhaseConfig(train=["gold", "kv_compression", "head"]))
    after_one, after_two = _export(data, "fz", 3), _export(data, "fz", 5)
    for name, before in start.items():
        if name in trained_first:
            assert not torch.equal(after_one[name], before), f"{name} should train in phase 1"
        else:
            assert torch.equal(after_one[name], before), f"{name} changed while frozen"
    for name in ("emb.weight", "blocks.0.att.key.weight", "blocks.1.ffn.value.weight"):
        assert not torch.equal(after_two[name], after_one[name]), f"{name} should train in phase 2"
    rows = metrics(data, "fz")
    assert [r["phase"] for r in rows] == [0, 0, 0, 1, 1]
    n_all = sum(p.numel() for p in model.parameters())
    n_first = sum(p.numel() for n, p in model.named_parameters() if n in trained_first)
    assert [r["trainable_params"] for r in rows] == [n_first] * 3 + [n_all] * 2
    # optimizer memory follows the trainable parameters
    ratio = rows[0]["optimizer_state_bytes"] / rows[-1]["optimizer_state_bytes"]
    assert ratio == pytest.approx(n_first / n_all, rel=0.05)


@pytest.mark.slow
def test_kills_in_phase_one_at_the_boundary_and_in_phase_two_resume_exactly(data):
    args = ["train.zero_stage=2", "train.max_steps=8", "train.save_every=2", "train.keep_last=9",
            "freeze.phases=[{until_step:4,train:[gold,head]},{train:[all],lr_scale:0.5}]", *QUIET]
    run_train(data, "train.run_name=whole", *args)
    for kill_after, resumes_at in ((3, None), (5, 2), (7, 4)):
        proc = run_train(data, "train.run_name=cut", *args, check=False,
                         env={"GOLDFINCH_FAULTS": f"kill_after_step:{kill_after}"})
        assert proc.returncode != 0
        if resumes_at:
            assert f"resumed from step{resumes_at:08d}" in proc.stdout
    proc = run_train(data, "train.run_name=cut", *args)
    assert "resumed from step00000006" in proc.stdout  # a phase-2 checkpoint
    assert losses(data, "cut") == losses(data, "whole")
    # activation checkpointing with frozen inputs (phase 1 trains the GOLD blocks over frozen
    # embeddings and Finch blocks): the recomputed blocks still get their gradients
    run_train(data, "train.run_name=ckpt", *args, "train.grad_ckpt=true")
    assert losses(data, "ckpt") == pytest.approx(losses(data, "whole"), rel=1e-6)
    assert losses(data, "whole")[3] < losses(data, "whole")[0]
    complete = json.loads((data / "runs" / "cut" / "checkpoints" / "step00000004" / "COMPLETE").read_text())
    assert complete["step"] == 4


@pytest.mark.slow
def test_upgrade_recipe_from_a_finch_run(data):
    run_train(data, "train.run_name=finch", "model.arch=finch", "train.max_steps=4", *QUIET)
    recipe = ROOT / "configs" / "recipes" / "upgrade-finch-to-goldfinch.yaml"
    proc = run_train(data, "--config", str(recipe), "train.run_name=up", "train.max_steps=6",
                     "train.save_every=3",
                     "freeze.phases=[{until_step:3,train:[gold,kv_compression,head]},{train:[all],lr_scale:0.5}]",
                     f"train.init_from={data / 'runs' / 'finch'}", *QUIET)
    report = json.loads((data / "runs" / "up" / "init_from.json").read_text())
    # the paper's upgrade architecture: RWKV-6 below GOLD, so every lower block loads whole
    assert {"emb.weight", "ln0.weight", "head.weight", "blocks.0.att.key.weight",
            "blocks.1.att.bonus", "blocks.1.att.gate.weight"} <= set(report["loaded"])
    # the GOLD block takes nothing from the Finch block at its index, channel mix included
    assert {"kv_compression.compress.weight", "blocks.2.att.query.weight",
            "blocks.2.ffn.key.weight", "blocks.2.ln1.weight"} <= set(report["new"])
    assert {"blocks.2.att.mix.mu", "blocks.2.ffn.key.weight"} <= set(report["other_kind"])
    assert "blocks.2.att.mix.mu" in report["ignored"]
    assert "loaded" in proc.stdout and "ignored" in proc.stdout
    rows = metrics(data, "up")
    assert [r["phase"] for r in rows] == [0, 0, 0, 1, 1, 1]
    # the loaded Finch blocks were frozen through phase 1: still the Finch run's weights
    finch, after_one, after_two = _export(data, "finch", 4), _export(data, "up", 3), _export(data, "up", 6)
    for name in ("emb.weight", "blocks.0.att.key.weight", "blocks.1.att.decay_base"):
        assert torch.equal(after_one[name], finch[name]), name
        assert not torch.equal(after_two[name], finch[name]), name  # thawed in phase 2


@pytest.mark.parametrize("source, needle", [
    ("names", "matches a parameter of this goldfinch model by name"),
    ("shapes", "shape mismatch"),
    ("missing", "not a run dir"),
])
def test_bad_init_from_fails_before_training(data, capsys, source, needle):
    """A missing source fails in-process before any engine (main() returns 2); a source that does
    not fit the model fails when the weights are read, before the first step (exit 1)."""
    from pipeline import train as trainer

    path = data / "weights.safetensors"
    if source == "names":
        save_file({"something.else": torch.zeros(3)}, str(path))
    elif source == "shapes":
        save_file({"emb.weight": torch.zeros(300, 32)}, str(path))
    else:
        path = data / "nowhere"
    args = ["train.run_name=bad", "train.max_steps=2", f"train.init_from={path}", *QUIET]
    if source == "missing":
        code = trainer.main([*TINY, f"data.path={data / 'data'}", f"train.out_dir={data / 'runs'}", *args])
        err = capsys.readouterr().err
    else:
        proc = run_train(data, *args, check=False)
        code, err = proc.returncode, proc.stderr
        assert "Traceback" not in err
    assert code != 0 and needle in err, err[-2000:]
    assert not (data / "runs" / "bad" / "metrics.jsonl").exists()


def test_bad_freeze_config_fails_before_training(data, capsys):
    from pipeline import train as trainer

    code = trainer.main([*TINY, f"data.path={data / 'data'}", f"train.out_dir={data / 'runs'}",
                         "train.run_name=bad", "train.max_steps=5", "model.arch=finch",
                         "freeze.phases=[{until_step:2,train:[gold]},{train:[all]}]"])
    assert code == 2 and "'gold' matches no parameter" in capsys.readouterr().err
    assert not (data / "runs" / "bad" / "metrics.jsonl").exists()
