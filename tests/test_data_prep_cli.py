"""`python -m data_prep` as users run it: one-line errors, and a real kill followed by a re-run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.config import load_config
from data_prep.job import KILL_AFTER_ENV, run
from data_prep_helpers import make_text_corpus, tree_bytes

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "data_prep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, needle", [
    (["data.nope=1"], "nope"),
    (["data.vocab_size=big"], "data.vocab_size"),
    (["data.input=/definitely/not/here"], "/definitely/not/here"),
    (["--config", "/no/such.yaml"], "/no/such.yaml"),
])
def test_user_errors_are_one_line(tmp_path, args, needle):
    result = cli(f"data.output={tmp_path / 'out'}", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("data_prep: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def _download(url: str, dest: Path) -> Path:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    dest.mkdir(parents=True)
    for key in fs.ls(url, detail=False):
        name = key.rsplit("/", 1)[-1]
        if not name.startswith("."):
            fs.get_file(key, str(dest / name))
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_killed_run_resumes_to_identical_output(tmp_path, where, request):
    corpus = tmp_path / "corpus"
    make_text_corpus(corpus, n=40)
    common = [f"data.input={corpus}", "data.vocab_size=400", "data.shard_bytes=3000", "data.val_fraction=0.2",
              "data.unit_bytes=4000"]
    reference = run(load_config(None, [*common, f"data.output={tmp_path / 'ref'}", "data.executor=local"]),
                    progress=False)
    assert len(reference["shards"]) >= 6
    out = str(tmp_path / "out") if where == "local" else f"{request.getfixturevalue('s3_bucket')}/data/out"
    killed = cli(*common, f"data.output={out}", "data.executor=ray", "data.num_cpus=2", env_extra={KILL_AFTER_ENV: "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if where == "local":
        assert not (Path(out) / "manifest.json").exists() and not list(Path(out).glob("*.tar"))
    resumed = cli(*common, f"data.output={out}", "data.executor=ray", "data.num_cpus=2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert " 0 verified and kept" not in resumed.stdout  # what the killed run staged is kept
    got = Path(out) if where == "local" else _download(out, tmp_path / "got")
    assert tree_bytes(got) == tree_bytes(tmp_path / "ref")


def test_input_and_output_on_object_storage_decode_back(tmp_path, s3_bucket):
    import s3fs

    from data_prep_helpers import decoder, read_samples, write_jsonl

    docs = make_text_corpus(tmp_path / "corpus", n=12)
    write_jsonl(tmp_path / "corpus" / "web.jsonl", [{"text": f"line {i} \u00e9\u65e5 " * (i + 2)} for i in range(40)])
    s3fs.S3FileSystem().put(str(tmp_path / "corpus"), f"{s3_bucket}/corpus", recursive=True)
    done = cli(f"data.input={s3_bucket}/corpus", f"data.output={s3_bucket}/data/default", "data.vocab_size=400",
               "data.unit_bytes=2000", "data.shard_bytes=2000", "data.executor=ray", "data.num_cpus=2")
    assert done.returncode == 0, done.stderr[-2000:]
    got = _download(f"{s3_bucket}/data/default", tmp_path / "got")
    decode, samples = decoder(got), read_samples(got)
    texts = {str(Path(p).relative_to(tmp_path / "corpus")): t for p, t in docs.items() if t}
    assert len(samples) == len(texts) + 40
    for s in samples:
        source = s["meta"]["source"]
        rel = source.split("/corpus/", 1)[1]
        if rel.startswith("web.jsonl:"):
            i = int(rel.split(":")[1]) - 1
            assert decode(s["tokens"]) == f"line {i} \u00e9\u65e5 " * (i + 2)
        else:
            assert decode(s["tokens"]) == texts[rel] and source.startswith("s3://")
