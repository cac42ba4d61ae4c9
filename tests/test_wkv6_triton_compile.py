"""The Triton kernels compile for a real GPU (sm_90 cubins via the wheel's ptxas), even on CPU CI,
and no bf16 WKV6 variant at head size 64 or 128 spills registers or outgrows shared memory.

The interpreter runs the kernels' arithmetic but not the compiler: this catches unsupported ops,
dot-shape limits, register spills and shared-memory overflows of the launches training makes.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
H100_SHARED = 232448
KERNELS = {"chunk_states_fwd", "chunk_outputs_fwd", "chunk_state_grads_bwd",
           "chunk_value_grads_bwd", "chunk_rk_grads_bwd", "decay_bonus_grads_bwd", "ce_rows_kernel"}


def _nvidia_backend_present() -> bool:
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return False
    return (Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.mark.skipif(not _nvidia_backend_present(), reason="triton's bundled CUDA toolchain is absent")
def test_bf16_variants_compile_for_sm90_without_spills(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DEFAULT_FP_FUSION="1", TRITON_CACHE_DIR=str(tmp_path))
    args = ["--arch", "90", "--json", "--head-sizes", "64", "128", "--dtypes", "bf16",
            "--lengths", "4096", "--kernels", "wkv6", "ce"]  # the training launches; the full check
    # adds T=1000 and T=1 (and WKV7: test_wkv7_triton_compile.py)
    out = subprocess.run([sys.executable, "-m", "kernels.compile_check", *args],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert {line["kernel"] for line in lines} == KERNELS
    # per head size: 2 state passes x 2 (initial state / final-state gradient), outputs and dv
    # x 2 (bonus), dr/dk, decay x 2 (bonus) = 11; and the CE rows kernel once
    assert len(lines) == 2 * 11 + 1
    assert {"T=4096", "HAS_U=False", "HAS_U=True", "HAS_S0=False", "HAS_DFINAL=True"} <= \
        {flag for line in lines for flag in line["variant"].split()}
    for line in lines:
        assert line["n_spills"] == 0, line
        assert 0 < line["n_regs"] <= 255 and line["shared_bytes"] <= H100_SHARED, line
