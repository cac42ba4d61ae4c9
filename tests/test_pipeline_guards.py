"""What the trainer refuses before any engine is built, run in-process through `main()`: bad
configs, a changed config under an existing run, another tokenizer, a bad resume path. One case
goes through the command line, to check the exit status and the one-line message there."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from model import build_model
from pipeline import runs
from pipeline import train as trainer
from pipeline.config import load_run_config, to_yaml

from pipeline_helpers import ENV, ROOT, TINY, make_data_dir

CONFIGS = sorted((ROOT / "configs" / "train").glob("*.yaml"))


@pytest.fixture
def data(tmp_path):
    make_data_dir(tmp_path / "data", docs_per_shard=(40,), val_docs=(10,))
    return tmp_path


def args(tmp_path, *overrides):
    return [*TINY, f"data.path={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'runs'}",
            f"tracking.dir={tmp_path / 'mlruns'}", *overrides]


def refused(capsys, tmp_path, *overrides) -> str:
    """main() exits 2 before training; returns its one-line message."""
    assert trainer.main(args(tmp_path, *overrides)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pipeline.train: ") and "\n" not in err, err
    return err


def fake_run(tmp_path, name: str, *overrides, tokenizer_sha: str | None = None) -> Path:
    """A run dir as training leaves it (config.yaml, metrics, one complete checkpoint), without
    training: the checks under test read only these files."""
    cfg, _ = trainer.prepare(load_run_config(None, args(tmp_path, f"train.run_name={name}", *overrides)))
    run = tmp_path / "runs" / name
    tag = run / "checkpoints" / "step00000003"
    tag.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 5.0 - s}) + "\n"
                                               for s in (1, 2, 3)))
    (tag / "rank0.pt").write_bytes(b"x" * 10)
    marker = {"step": 3, "files": {"rank0.pt": 10}}
    if tokenizer_sha:
        marker["tokenizer_sha256"] = tokenizer_sha
    (tag / runs.COMPLETE).write_text(json.dumps(marker))
    return run


@pytest.mark.parametrize("override, needle", [
    ("train.zero_stage=5", "train.zero_stage=5"),
    ("train.precision=fp8", "train.precision='fp8'"),
    ("train.bogus=1", "bogus"),
    ("model.ctx_len=100000", "model.ctx_len=100000"),
    ("model.vocab_size=50", "model.vocab_size=50"),
    ("data.path=/nonexistent/dir", "/nonexistent/dir"),
    ("train.micro_batch=0", "train.micro_batch=0"),
    ("train.global_batch=6", "train.global_batch=6 is not divisible by train.micro_batch=4"),
    ("train.resume=/nonexistent/step00000003", "train.resume=/nonexistent/step00000003: not a complete"),
])
def test_bad_config_fails_before_training(data, capsys, override, needle):
    assert needle in refused(capsys, data, "train.max_steps=1", override)
    assert not (data / "runs").exists()


def test_bad_config_on_the_command_line_exits_2_with_one_line(data):
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", *args(data, "train.zero_stage=5")],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("pipeline.train: train.zero_stage=5")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_train_config_loads_and_validates(path):
    cfg = load_run_config(path, ["model.vocab_size=16384"])
    model = build_model(cfg.model, device="meta")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert cfg.train.run_name and cfg.model.ctx_len > 0


def test_a_changed_config_under_an_existing_run_is_refused(data, capsys):
    run = fake_run(data, "r")
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    err = refused(capsys, data, "train.run_name=r", "model.n_layer=2", "train.micro_batch=2")
    assert "model.n_layer: 3 -> 2" in err and "train.micro_batch: 4 -> 2" in err
    assert "train.run_name=<new name>" in err and f"train.init_from={run}" in err
    assert "train.resume=never" in err
    assert {name: (run / name).read_bytes() for name in before} == before
    # what may change between invocations does not stop a resume
    cfg, _ = trainer.prepare(load_run_config(None, args(data, "train.run_name=r", "train.max_steps=50",
                                                        "train.lr=1e-4", "train.val_every=5")))
    assert cfg.train.max_steps == 50
    # starting over is explicit
    trainer.prepare(load_run_config(None, args(data, "train.run_name=r", "model.n_layer=2",
                                               "train.resume=never")))


def test_another_tokenizer_is_refused_unless_allowed(data, capsys):
    tokenizer = data / "data" / "tokenizer.json"
    own = checkpointing_sha(tokenizer)
    other = "f" * 64
    run = fake_run(data, "r", tokenizer_sha=other)
    err = refused(capsys, data, "train.run_name=r")
    assert "tokenizer sha256 ffffffffffffffff" in err and own[:16] in err
    assert "train.allow_other_tokenizer=true" in err
    trainer.prepare(load_run_config(None, args(data, "train.run_name=r", "train.allow_other_tokenizer=true")))
    # a new run from those weights: the checkpoint, the run dir, or an export carrying its tokenizer
    export = data / "export"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"")
    (export / "tokenizer.json").write_text(tokenizer.read_text() + "\n")  # same vocabulary, other bytes
    for source in (run / "checkpoints" / "step00000003", run, export):
        err = refused(capsys, data, "train.run_name=new", f"train.init_from={source}")
        assert f"train.init_from={source} was trained with the tokenizer" in err
    (export / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    trainer.prepare(load_run_config(None, args(data, "train.run_name=new", f"train.init_from={export}")))


def checkpointing_sha(path: Path) -> str:
    from pipeline.training.run_guard import file_sha256

    return file_sha256(path)


def test_resume_path_must_be_a_whole_checkpoint(data, capsys):
    run = fake_run(data, "r")
    tag = run / "checkpoints" / "step00000003"
    (tag / "rank0.pt").write_bytes(b"x")  # torn: the marker recorded 10 bytes
    err = refused(capsys, data, "train.run_name=r2", f"train.resume={tag}")
    assert "the checkpoint is torn (rank0.pt has 1 bytes, 10 were written)" in err
    err = refused(capsys, data, "train.run_name=r2", f"train.resume={run}")
    assert f"train.resume={run}: not a complete checkpoint dir" in err
