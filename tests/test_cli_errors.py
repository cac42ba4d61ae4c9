"""One user-error root and one CLI wrapper: every command's main turns a bad key or a bad path
into one `<prog>: <message>` line on stderr and exit 2, in-process. The trainer's data section
refuses data-prep keys by name, and a run written before that change still exports and evaluates."""
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from common.cli import command, one_line
from common.config_loader import load_config
from common.errors import ConfigError, MissingFileError, UserError
from data_prep.__main__ import main as data_prep_main
from data_prep.errors import UserError as DataPrepUserError
from model import build_model
from model.cache_report import main as cache_report_main
from model.convert import ConvertError
from model.convert.__main__ import main as convert_main
from pipeline import compare, evaluate, export, generate
from pipeline import train as trainer
from pipeline.config import TrainDataConfig, load_run_config, to_yaml
from pipeline.data import default_needed
from pipeline.errors import PipelineError
from pipeline.eval.compare_report import main as compare_report_main
from pipeline.runs import data_dir_of, model_config_of
from pipeline.training import checkpointing, run_guard

from pipeline_helpers import TINY, make_data_dir

MISSING = "/no/such/place"


def one_line_exit(capsys, main, argv, prog: str, needle: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"{prog}: ") and needle in err, err
    return err


@pytest.mark.parametrize("main, argv, prog, needle", [
    (trainer.main, ["train.nope=1"], "pipeline.train", "nope"),
    (trainer.main, ["--config", MISSING], "pipeline.train", MISSING),
    (export.main, ["--run", MISSING, "--out", MISSING + "/x"], "pipeline.export", MISSING),
    (evaluate.main, ["--run", MISSING], "pipeline.evaluate", MISSING),
    (generate.main, ["--run", MISSING, "--prompt", "x"], "pipeline.generate", MISSING),
    (compare.main, ["nope=1"], "pipeline.compare", "nope"),
    (default_needed.main, ["train", "data.nope=1"], "make train", "data.nope"),
    (data_prep_main, ["data.nope=1"], "data_prep", "nope"),
    (data_prep_main, ["--config", MISSING], "data_prep", MISSING),
    (convert_main, ["import", MISSING, "--out", MISSING + "/o"], "model.convert", MISSING),
    (cache_report_main, ["model.nope=1"], "cache_report", "nope"),
    (compare_report_main, [MISSING + ".json"], "pipeline.eval.compare_report", MISSING),
])
def test_every_command_exits_2_with_one_line(capsys, main, argv, prog, needle):
    one_line_exit(capsys, main, argv, prog, needle)


def test_lm_eval_exits_2_with_one_line(capsys):
    from pipeline import lm_eval

    one_line_exit(capsys, lm_eval.main, ["--run", MISSING, "--tasks", "x"], "pipeline.lm_eval", MISSING)


def test_export_reports_a_pipeline_error_as_one_line(capsys, monkeypatch):
    def refuse(*_):
        raise PipelineError("the checkpoint is torn")

    monkeypatch.setattr(export, "export", refuse)
    one_line_exit(capsys, export.main, ["--run", "r", "--out", "o"], "pipeline.export", "torn")


def test_other_exceptions_keep_their_traceback():
    @command("prog")
    def main(argv):
        raise KeyError(argv)

    with pytest.raises(KeyError):
        main("x")


def test_the_old_error_types_are_the_one_root():
    for old in (PipelineError, ConvertError, DataPrepUserError, MissingFileError, ConfigError):
        assert issubclass(old, UserError) and issubclass(old, ValueError)
    assert issubclass(PipelineError, RuntimeError) and issubclass(MissingFileError, FileNotFoundError)
    assert DataPrepUserError is UserError


def test_loader_names_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(TrainDataConfig, [bad])
    with pytest.raises(UserError, match="not key=value"):
        load_config(TrainDataConfig, [], ["path"])
    with pytest.raises(UserError) as err:
        load_config(TrainDataConfig, [], ["retries=many"])
    assert "retries" in str(err.value) and "\n" not in str(err.value)
    assert "\n" not in one_line(err.value)


@pytest.mark.parametrize("key", ["data.vocab_size=300", "data.tokenizer=rwkv-world", "data.seed=1"])
def test_trainer_refuses_data_prep_keys_by_name(key):
    with pytest.raises(UserError, match=key.split("=")[0].split(".")[1]) as err:
        load_run_config(None, [key])
    assert "python -m data_prep" in str(err.value)


def old_args(tmp_path: Path) -> list[str]:
    return [*TINY, f"data.path={tmp_path / 'data'}", "train.zero_stage=0", "model.vocab_size=300",
            f"train.out_dir={tmp_path / 'runs'}", "train.run_name=old"]


def old_run(tmp_path: Path) -> Path:
    """A run dir as training wrote it before the data section lost the data-prep keys: its
    config.yaml carries them; one complete ZeRO-0 checkpoint of random weights."""
    data = tmp_path / "data"
    make_data_dir(data, docs_per_shard=(40,), val_docs=(10,))
    cfg = load_run_config(None, old_args(tmp_path))
    saved = OmegaConf.create(to_yaml(cfg))
    saved.data.update({"vocab_size": 16384, "tokenizer": None, "output": "data/default",
                       "val_fraction": 0.01, "executor": "auto"})
    run = tmp_path / "runs" / "old"
    tag = run / "checkpoints" / checkpointing.tag_for(3)
    tag.mkdir(parents=True)
    OmegaConf.save(saved, run / "config.yaml")
    weights = tag / "mp_rank_00_model_states.pt"
    torch.save({"module": build_model(cfg.model).state_dict()}, weights)
    marker = {"step": 3, "files": {weights.name: weights.stat().st_size}}
    (tag / checkpointing.COMPLETE).write_text(json.dumps(marker))
    return run


def test_an_old_run_config_still_exports_and_evaluates(tmp_path, capsys):
    run = old_run(tmp_path)
    saved = OmegaConf.load(run / "config.yaml")
    assert "vocab_size" in saved.data  # written by the old schema
    assert model_config_of(saved).vocab_size == 300 and data_dir_of(saved) == str(tmp_path / "data")
    assert export.main(["--run", str(run), "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert evaluate.main(["--run", str(run), "--batches", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"] > 0
    run_guard.check_same_run(load_run_config(None, old_args(tmp_path)), run)  # resumable: no refusal


def test_an_override_that_is_not_yaml_is_named(capsys):
    one_line_exit(capsys, default_needed.main, ["train", "freeze.phases=[{until_step:8"], "make train",
                  "freeze.phases=[{until_step: 8")


def test_a_torn_manifest_is_one_line(tmp_path, capsys):
    make_data_dir(tmp_path / "data", docs_per_shard=(40,), val_docs=(10,))
    (tmp_path / "data" / "manifest.json").write_text("{")
    one_line_exit(capsys, trainer.main, [*TINY, f"data.path={tmp_path / 'data'}"], "pipeline.train",
                  "manifest.json is not JSON")
