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


@pytest.mark.slow
def test_killed_run_resumes_to_identical_output(tmp_path):
    corpus = tmp_path / "corpus"
    make_text_corpus(corpus, n=40)
    common = [f"data.input={corpus}", "data.vocab_size=400", "data.shard_bytes=3000", "data.val_fraction=0.2"]
    reference = run(load_config(None, [*common, f"data.output={tmp_path / 'ref'}", "data.executor=local"]),
                    progress=False)
    assert len(reference["shards"]) >= 6
    out = tmp_path / "out"
    killed = cli(*common, f"data.output={out}", "data.num_cpus=2", env_extra={KILL_AFTER_ENV: "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "manifest.json").exists()
    assert 2 <= len(list(out.glob("*.tar"))) < len(reference["shards"])
    resumed = cli(*common, f"data.output={out}", "data.num_cpus=2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "verified and kept" in resumed.stdout and "0 shards built" not in resumed.stdout
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")
