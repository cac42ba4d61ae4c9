"""The WKV7 Triton kernels compile for a real GPU (sm_90 cubins via the wheel's ptxas), even on CPU
CI: every training launch at head sizes 64 and 128 in bf16 fits shared memory and spills nothing,
forward and backward (docs/BENCHMARKS.md)."""
import json
import os
import subprocess
import sys

import pytest
from test_wkv6_triton_compile import H100_SHARED, REPO, _nvidia_backend_present


@pytest.mark.skipif(not _nvidia_backend_present(), reason="triton's bundled CUDA toolchain is absent")
def test_bf16_training_launches_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DEFAULT_FP_FUSION="1", TRITON_CACHE_DIR=str(tmp_path))
    args = ["--arch", "90", "--json", "--head-sizes", "64", "128", "--dtypes", "bf16",
            "--lengths", "4096", "--kernels", "wkv7"]
    out = subprocess.run([sys.executable, "-m", "kernels.compile_check", *args],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    # per head size: forward x (initial state or not) x (y, or the states for the backward),
    # backward x (final-state gradient or not)
    assert len(lines) == 2 * 6
    assert {line["kernel"] for line in lines} == {"wkv7_fwd_kernel", "wkv7_bwd_kernel"}
    assert {"HAS_S0=True", "HAS_S0=False", "HAS_DFINAL=True", "STORE_STATES=True"} <= \
        {flag for line in lines for flag in line["variant"].split()}
    for line in lines:
        assert 0 < line["n_regs"] <= 255 and line["shared_bytes"] <= H100_SHARED, line
        assert line["n_spills"] == 0, line
