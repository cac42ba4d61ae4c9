"""A freeze phase's warmup_steps: the parameters it newly trains ramp up their lr from the
switch, as a function of the global step only (so resume stays exact)."""
import pytest

from model import build_model
from pipeline.config import load_run_config
from pipeline.training import freezing

from pipeline_helpers import make_data_dir, metrics, run_train
from test_pipeline_freeze import phases, tiny

RAMP = "freeze.phases=[{until_step:3,train:[gold,head]},{train:[all],warmup_steps:3}]"


def test_factor_ramps_from_the_switch_like_the_trainers_warmup():
    cfg = phases({"until_step": 4, "train": ["gold"]}, {"train": ["all"], "warmup_steps": 4})
    got = [freezing.new_params_lr_factor(cfg, freezing.phase_at(cfg, s), s) for s in range(10)]
    assert got == pytest.approx([1, 1, 1, 1, 0.2, 0.4, 0.6, 0.8, 1, 1])
    plain = phases({"until_step": 4, "train": ["gold"]}, {"train": ["all"]})
    assert freezing.new_params_lr_factor(plain, 1, 4) == 1.0


@pytest.mark.parametrize("items, needle", [
    ([{"until_step": 3, "train": ["gold"], "warmup_steps": 2}, {"train": ["all"]}], "phases[0].warmup_steps=2"),
    ([{"until_step": 3, "train": ["gold"]}, {"train": ["all"], "warmup_steps": -1}], "phases[1].warmup_steps=-1"),
])
def test_bad_warmup_is_named(items, needle):
    with pytest.raises(ValueError, match="freeze.phases") as err:
        freezing.validate(phases(*items), build_model(tiny(), device="meta"), max_steps=20)
    assert needle in str(err.value)


def test_command_line_syntax():
    assert load_run_config(None, [RAMP]).freeze.phases[1].warmup_steps == 3


@pytest.fixture
def data(tmp_path):
    make_data_dir(tmp_path / "data", docs_per_shard=(30, 30), val_docs=(10,))
    return tmp_path


@pytest.mark.slow
def test_new_groups_ramp_under_zero_and_resume_exactly(data):
    args = ["train.zero_stage=2", "train.max_steps=7", "train.save_every=2", "train.keep_last=9",
            "train.export=false", RAMP]
    run_train(data, "train.run_name=whole", *args)
    rows = metrics(data, "whole")
    assert [r["lr_new_params"] for r in rows[:3]] == [None] * 3  # phase 0: nothing is new
    ramp = [r["lr_new_params"] / r["lr"] for r in rows[3:]]
    assert ramp == pytest.approx([0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0])
    proc = run_train(data, "train.run_name=cut", *args, check=False,
                     env={"GOLDFINCH_FAULTS": "kill_after_step:5"})
    assert proc.returncode != 0
    proc = run_train(data, "train.run_name=cut", *args)
    assert "resumed from step00000004" in proc.stdout  # inside the ramp
    assert [r["loss"] for r in metrics(data, "cut")] == [r["loss"] for r in rows]
    assert [r["lr_new_params"] for r in metrics(data, "cut")] == [r["lr_new_params"] for r in rows]
