"""benchmarks/gpu_check.py on CPU: the plan, skips for missing packages, time limits, JSON lines,
the summary's verdicts, and two parts run for real at toy sizes (Triton interpreted)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load(name):
    """A benchmark script as a module (its folder goes last on sys.path, after the packages)."""
    sys.path.append(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load("gpu_check")
parts = sys.modules["gpu_check_parts"]


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def rows(out: Path):
    return [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]


def test_dry_run_plans_every_part_and_names_missing_packages(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name: None if name in ("fla", "deepspeed") else real(name))
    assert gpu_check.main(["--out", str(tmp_path), "--dry-run"]) == 0
    got = {r["part"]: r for r in rows(tmp_path) if "part" in r}
    assert list(got) == list(gpu_check.PARTS)
    assert got["wkv6_fla"] == {"part": "wkv6_fla", "status": "skipped",
                               "reason": "missing package: fla"}
    assert got["train_l24"]["reason"] == "missing package: deepspeed"
    assert got["tests"]["status"] == "planned" and got["tests"]["limit_s"] == 80
    assert rows(tmp_path)[0]["record"] == "env"
    assert "train_l24     skipped" in (tmp_path / "summary.txt").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--parts", "tests,magic"], "unknown part(s) magic"),
    ([], "no CUDA device here"),
])
def test_bad_arguments_are_refused(tmp_path, args, needle):
    proc = run("--out", str(tmp_path), *args)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


def test_a_part_over_its_limit_is_stopped_and_recorded_as_timeout(tmp_path):
    results = gpu_check.Results(tmp_path)
    args = gpu_check.argparse.Namespace(out=tmp_path, smoke=True)
    gpu_check.run_part("wkv6_speed", 0.5, args, results)
    assert results.rows[-1]["status"] == "timeout" and results.rows[-1]["seconds"] < 30


def test_out_of_budget_parts_are_skipped_not_run(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path), "--smoke", "--budget-s", "1",
                           "--parts", "fused_ce"]) == 0
    assert rows(tmp_path)[-1] == {"part": "fused_ce", "status": "skipped",
                                  "reason": "out of time (--budget-s)"}


def test_smoke_parts_measure_and_compare(tmp_path):
    proc = run("--out", str(tmp_path), "--smoke", "--parts", "wkv6_correct,fused_ce")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = rows(tmp_path)
    checks = [r for r in got if r.get("part") == "wkv6_correct" and "ok" in r]
    assert len(checks) == 2 and all(r["ok"] for r in checks)
    assert {"y", "dw", "du", "dstate"} <= set(checks[0]["max_scaled_err"])
    assert (checks[0]["dtype"], checks[1]["u"], checks[1]["state"]) == ("bfloat16", False, False)
    losses = {r["kind"]: r["loss"] for r in got if "kind" in r}
    assert losses["fused"] == pytest.approx(losses["plain"], rel=1e-4)
    assert [r["status"] for r in got if "status" in r] == ["ok", "ok"]
    assert (tmp_path / "wkv6_correct.log").is_file()


def test_summary_states_ratios_and_targets():
    rows_ = [{"record": "env", "device": "H100"},
             {"part": "wkv6_speed", "impl": "triton", "u": False, "ms": 2.0},
             {"part": "wkv6_speed", "impl": "torch chunked", "u": False, "ms": 50.0},
             {"part": "wkv6_fla", "impl": "fla chunk_rwkv6", "u": False, "ms": 1.6},
             {"part": "train_l24", "steps": 20, "tokens_per_s": 40000.0, "mfu": 0.45},
             {"part": "train_l24_gf7", "steps": 20, "tokens_per_s": 30000.0, "mfu": 0.35},
             {"part": "wkv6_fla", "status": "ok", "seconds": 70.0}]
    text = "\n".join(gpu_check.summarize(rows_))
    assert "torch chunked 50.00 ms: Triton 25.00x faster (target >= 20x: met)" in text
    assert "fla chunk_rwkv6 1.60 ms: Triton 0.80x faster (target >= 1x: NOT met)" in text
    assert "MFU 45.0% (target >= 40%: met)" in text
    assert "GoldFinch-7 L24-D2048: 30000 tokens/s, MFU 35.0% (target >= 40%: NOT met)" in text
    assert "target" not in "\n".join(gpu_check.summarize(rows_, judge=False))


def test_trainer_is_stopped_once_it_logged_enough_steps(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    script = (f"import json, time\nwith open({str(metrics)!r}, 'w') as f:\n"
              "    for i in range(1, 5):\n"
              "        f.write(json.dumps({'step': i, 'loss': 5.0 - i}) + '\\n'); f.flush()\n"
              "    f.write('{\"step\": 5, \"lo')\n    f.flush()\n    time.sleep(600)\n")
    got = parts._run_until_steps([sys.executable, "-c", script], metrics, 3, tmp_path / "log")
    assert [r["step"] for r in got] == [1, 2, 3]
    with pytest.raises(RuntimeError, match="after 4 of 9 steps"):
        parts._run_until_steps([sys.executable, "-c", script.replace("time.sleep(600)", "pass")],
                               metrics, 9, tmp_path / "log")


def test_train_command_is_the_l24_gpu_config_on_one_gpu(tmp_path):
    cmd = parts.train_command(tmp_path, 20, smoke=False)
    assert cmd[cmd.index("--config") + 1].endswith("configs/train/L24-D2048-gpu.yaml")
    assert {"train.max_steps=20", "train.global_batch=0", "train.grad_accum=1",
            "model.vocab_size=65536", "tracking.enabled=false"} <= set(cmd)


def test_train_part_data_helper_keeps_its_signature():
    """The training part builds its synthetic data with the tests' helper; a rename breaks it."""
    import inspect

    from pipeline_helpers import make_data_dir
    assert {"docs_per_shard", "val_docs"} <= set(inspect.signature(make_data_dir).parameters)


def test_smoke_wkv7_part_times_triton_and_torch_without_fla(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "fla_chunk_rwkv7", lambda: None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    lines = []
    monkeypatch.setattr(parts, "emit", lambda **row: lines.append(row))
    parts.part_wkv7("cpu", smoke=True)
    timed = {r["wkv7_impl"]: r["ms"] for r in lines if "wkv7_impl" in r}
    assert timed["triton"] > 0 and timed["torch chunked"] > 0 and timed["fla chunk_rwkv7"] is None
    check = next(r for r in lines if "wkv7_check" in r)
    assert check["max_scaled_grad_diff"] < 1e-4
    text = "\n".join(gpu_check.summarize([{"record": "env"}, *lines], judge=False))
    assert "WKV7: Triton" in text and "torch chunked" in text
