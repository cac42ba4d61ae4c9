"""Which runs read data/default (so `make train` / `make compare` build it first): the config is
resolved as the trainer resolves it, from a YAML file, overrides and data.mix."""
import pytest

from pipeline.data.default_needed import main, needed

MIX = "data.mix=[{{path: {a}, weight: 1}}, {{path: {b}, weight: 2}}]"


@pytest.fixture(autouse=True)
def _in_a_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/default is relative to where make runs


@pytest.mark.parametrize("overrides, expected", [
    ([], True),
    (["data.path=data/default"], True),
    (["data.path=./data/default/"], True),
    (["data.path=data/other"], False),
    (["data.path=s3://bucket/data/default"], False),
    ([MIX.format(a="data/a", b="data/b")], False),
    ([MIX.format(a="data/a", b="data/default")], True),
])
def test_train_overrides(overrides, expected):
    assert needed("train", None, overrides) is expected


def test_an_absolute_path_to_the_default_dir_counts(tmp_path):
    assert needed("train", None, [f"data.path={tmp_path / 'data' / 'default'}"])


def test_a_config_file_sets_the_path_and_args_win_over_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  path: data/mine\n")
    assert not needed("train", str(config), [])
    assert needed("train", str(config), ["data.path=data/default"])
    config.write_text("data:\n  mix:\n    - {path: data/x, weight: 1}\n")
    assert not needed("train", str(config), [])


def test_compare_reads_its_own_data_key():
    assert needed("compare", None, [])  # configs/compare/default.yaml or the schema: data/default
    assert not needed("compare", None, ["data=data/other"])


def test_the_command_line_prints_yes_or_no_and_refuses_a_bad_key(capsys):
    assert main(["train", "data.path=data/other"]) == 0
    assert capsys.readouterr().out.strip() == "no"
    assert main(["train"]) == 0
    assert capsys.readouterr().out.strip() == "yes"
    assert main(["train", "data.pth=x"]) == 2
    assert "data.pth" in capsys.readouterr().err
    assert main(["train", "--config", "missing.yaml"]) == 2
    assert "missing.yaml" in capsys.readouterr().err
