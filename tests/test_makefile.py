"""The Makefile as a new user drives it: ARGS reach Python exactly as typed (no brace expansion, no
globbing), the automatic data build does not inherit them, and TORCH_SPEC is split into pip
arguments. Everything runs `make` for real; nothing trains (launch/train.sh's DRY_RUN prints the
command instead)."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from pipeline_helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
PHASES = "freeze.phases=[{until_step:8,train:[gold]},{train:[all]}]"


def make(*args, cwd=ROOT, env=None):
    base = {k: v for k, v in os.environ.items() if k not in ("ARGS", "CONFIG", "NPROC", "MAKEFLAGS")}
    proc = subprocess.run(["make", "--no-print-directory", *args], capture_output=True, text=True,
                          cwd=cwd, env={**base, **(env or {})}, timeout=120)
    return proc


def printed_command(stdout: str) -> list[str]:
    """The trainer command launch/train.sh printed under DRY_RUN=1 (shell-quoted)."""
    line = next(ln for ln in stdout.splitlines() if "pipeline.train" in ln and not ln.startswith("set "))
    return shlex.split(line)


def test_train_args_reach_the_trainer_verbatim():
    # DEFAULT_DATA names an existing file, so the automatic `make data` is not needed here
    proc = make("train", "DRY_RUN=1", "DEFAULT_DATA=Makefile",
                f"ARGS={PHASES} train.run_name='my run' data.input=*.toml")
    assert proc.returncode == 0, proc.stderr
    cmd = printed_command(proc.stdout)
    assert cmd[-3:] == [PHASES, "train.run_name=my run", "data.input=*.toml"]


def test_the_automatic_data_build_does_not_inherit_train_args(tmp_path):
    # -n prints the recipes; the recursive `make data` still runs (dry) and shows its command
    proc = make("-n", "train", f"DEFAULT_DATA={tmp_path / 'missing.json'}",
                "ARGS=model.n_layer=4 train.max_steps=3")
    assert proc.returncode == 0, proc.stderr
    data_line = next(ln for ln in proc.stdout.splitlines() if "-m data_prep" in ln)
    assert "model.n_layer" not in data_line and "max_steps" not in data_line
    assert "model.n_layer=4 train.max_steps=3" in proc.stdout  # the trainer still gets them


@pytest.mark.parametrize("spec, expected", [
    ("torch==2.13.0 --index-url https://wheels.example/cu128",
     ["torch==2.13.0", "--index-url", "https://wheels.example/cu128"]),
    ("torch>=2.4", ["torch>=2.4"]),
])
def test_torch_spec_is_split_into_pip_arguments(tmp_path, spec, expected):
    """A fake venv Python records what `make setup` asks pip for; `import torch` fails in it."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls"
    fake = venv / "bin" / "python"
    fake.write_text('#!/bin/bash\n[ "$1" = -c ] && exit 1\nprintf "%s\\n" "$@" >>"$CALLS"; echo --- >>"$CALLS"\n')
    fake.chmod(0o755)
    proc = make("setup", f"VENV={venv}", f"TORCH_SPEC={spec}", env={"CALLS": str(log)})
    assert proc.returncode == 0, proc.stderr
    calls = [c.strip().splitlines() for c in log.read_text().split("---") if c.strip()]
    assert calls[0] == ["-m", "pip", "install", "-q", *expected]
    assert calls[1] == ["-m", "pip", "install", "-q", "-e", ".[dev]"]
    assert not list(ROOT.glob("=*"))  # `>=2.4` was not a shell redirect


def data_built(stdout: str) -> bool:
    """Whether a `make -n` transcript runs the automatic `make data`."""
    return any("-m data_prep" in ln for ln in stdout.splitlines())


@pytest.mark.parametrize("args, config, expected", [
    ("train.max_steps=3", None, True),
    ("data.path=data/mine", None, False),
    ("'data.mix=[{path: data/a, weight: 1}]'", None, False),
    ("'data.mix=[{path: data/a, weight: 1},{path: data/default, weight: 1}]'", None, True),
    ("", "data:\n  path: data/mine\n", False),
])
def test_train_builds_the_default_data_only_when_the_run_reads_it(tmp_path, args, config, expected):
    extra = []
    if config:
        (tmp_path / "run.yaml").write_text(config)
        extra.append(f"CONFIG={tmp_path / 'run.yaml'}")
    proc = make("-n", "train", f"DEFAULT_DATA={tmp_path / 'missing.json'}", f"VENV={sys.prefix}",
                f"ARGS={args}", *extra)
    assert proc.returncode == 0, proc.stderr
    assert data_built(proc.stdout) is expected
    assert "launch/train.sh" in proc.stdout


def test_compare_builds_the_default_data_only_when_it_reads_it(tmp_path):
    missing = f"DEFAULT_DATA={tmp_path / 'missing.json'}"
    assert data_built(make("-n", "compare", missing, f"VENV={sys.prefix}").stdout)
    proc = make("-n", "compare", missing, f"VENV={sys.prefix}", "ARGS=data=data/mine")
    assert proc.returncode == 0, proc.stderr
    assert not data_built(proc.stdout)


def test_a_bad_key_stops_make_train_before_any_data_is_built(tmp_path):
    proc = make("-n", "train", f"DEFAULT_DATA={tmp_path / 'missing.json'}", f"VENV={sys.prefix}",
                "ARGS=data.pth=data/mine")
    assert proc.returncode != 0
    assert "data.pth" in proc.stderr and not data_built(proc.stdout)


@pytest.mark.slow
def test_make_train_on_another_data_dir_leaves_no_default_data_in_a_fresh_copy(tmp_path):
    from pipeline_helpers import TINY, make_data_dir

    repo = tmp_path / "repo"
    for name in ("launch", "common", "pipeline", "model", "kernels", "data_prep", "configs"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    make_data_dir(tmp_path / "built")
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than the copied pyproject.toml: `make setup` has nothing to do
    args = " ".join([*TINY, f"data.path={tmp_path / 'built'}", "train.max_steps=1", "train.export=false"])
    proc = make("train", f"VENV={sys.prefix}", f"STAMP={stamp}", f"ARGS={args}", cwd=repo,
                env={"PY": sys.executable, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (repo / "runs" / "goldfinch-tiny" / "metrics.jsonl").is_file()
    assert not (repo / "data").exists()
