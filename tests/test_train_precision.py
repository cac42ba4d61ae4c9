"""train.precision=auto (bf16 on CUDA, fp32 elsewhere) and train.wkv_backend, the config key that
picks the WKV6 backend (GOLDFINCH_WKV_BACKEND is only its default)."""
import pytest
from omegaconf import OmegaConf

from pipeline.config import load_run_config, resolve_precision
from pipeline.training.engine import deepspeed_config

from pipeline_helpers import make_data_dir, run_train


def test_precision_defaults_to_auto():
    assert load_run_config().train.precision == "auto"


@pytest.mark.parametrize("asked, cuda, used", [
    ("auto", True, "bf16"), ("auto", False, "fp32"),
    ("fp32", True, "fp32"), ("bf16", False, "bf16"),
])
def test_auto_resolves_by_device_and_explicit_choices_stay(asked, cuda, used):
    cfg = resolve_precision(load_run_config(overrides=[f"train.precision={asked}"]), cuda)
    assert cfg.train.precision == used
    assert deepspeed_config(cfg.train, 1)["bf16"]["enabled"] == (used == "bf16")


@pytest.mark.parametrize("override, needle", [
    ("train.precision=fp16", "train.precision='fp16'"),
    ("train.wkv_backend=cuda", "train.wkv_backend='cuda'"),
])
def test_bad_values_are_named(override, needle):
    with pytest.raises(ValueError, match=needle):
        load_run_config(overrides=[override])


@pytest.mark.slow
def test_run_records_the_precision_it_used(tmp_path):
    """On CPU auto trains in fp32, and config.yaml (the params MLflow logs) says fp32, not auto."""
    make_data_dir(tmp_path / "data", docs_per_shard=(12,), val_docs=(4,))
    run_train(tmp_path, "train.run_name=p", "train.max_steps=2", "train.save_every=0",
              "train.export=false", "tracking.enabled=false", "train.wkv_backend=naive",
              env={"GOLDFINCH_WKV_BACKEND": "magic"})  # the config key wins over the env var
    saved = OmegaConf.load(tmp_path / "runs" / "p" / "config.yaml")
    assert saved.train.precision == "fp32"
    assert saved.train.wkv_backend == "naive"
