"""data.executor=auto (the default): this process for a small corpus, Ray for a large one or when
RAY_ADDRESS names a cluster; local and ray stay what they say."""
import pytest

from data_prep.config import DataConfig, load_config
from data_prep.errors import UserError
from data_prep.executor import choose
from data_prep.job import run
from data_prep_helpers import make_text_corpus

MB = 1_000_000


@pytest.mark.parametrize("kind, nbytes, env, expected", [
    ("auto", 10 * MB, {}, "local"),
    ("auto", 64 * MB - 1, {}, "local"),
    ("auto", 64 * MB, {}, "ray"),
    ("auto", 10 * MB, {"RAY_ADDRESS": "10.0.0.1:6379"}, "ray"),
    ("auto", 10 * MB, {"RAY_ADDRESS": ""}, "local"),
    ("local", 500 * MB, {"RAY_ADDRESS": "10.0.0.1:6379"}, "local"),
    ("ray", 1, {}, "ray"),
])
def test_choose(kind, nbytes, env, expected):
    assert choose(kind, nbytes, 64 * MB, env) == expected


def test_auto_is_the_default_and_bad_values_name_the_key():
    assert DataConfig().executor == "auto" and load_config(None, []).executor == "auto"
    with pytest.raises(UserError, match="data.executor='threads'.*auto, ray, local"):
        load_config(None, ["data.executor=threads"])
    with pytest.raises(UserError, match="data.auto_local_bytes=0"):
        load_config(None, ["data.auto_local_bytes=0"])


def test_the_threshold_does_not_change_what_is_written(tmp_path):
    """auto_local_bytes decides how a run goes, never its bytes: a build with another threshold
    is the same config, not one to refuse or rebuild."""
    from data_prep.config import recorded

    assert recorded(load_config(None, ["data.auto_local_bytes=5"])) == recorded(load_config(None, []))


def test_a_small_corpus_is_built_in_this_process(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    make_text_corpus(tmp_path / "corpus", n=6)
    cfg = load_config(None, [f"data.input={tmp_path / 'corpus'}", f"data.output={tmp_path / 'out'}",
                             "data.vocab_size=300"])
    run(cfg, progress=False)
    assert "executor local" in capsys.readouterr().out
    import ray

    assert not ray.is_initialized()
