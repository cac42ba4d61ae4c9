"""Suite-wide settings: Triton runs compiled on a CUDA device and through its CPU interpreter only
where there is none (or when TRITON_INTERPRET=1 is asked for); GPU tests skip without CUDA.

Triton reads TRITON_INTERPRET when a kernel is decorated, so it is decided here, before any test
module imports a kernel (`import torch` does not import triton)."""
import os

import pytest
import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

# under `pytest -n N` the workers share the cores: threads beyond a worker's share only contend
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


# modules whose tests share the session's reference runs below: one xdist worker runs them all
SHARED_RUNS = {"test_pipeline_train.py", "test_launch_train.py", "test_pipeline_freeze.py"}


def pytest_collection_modifyitems(config, items):
    # under `pytest -n N --dist loadgroup` (make test) a module stays on one worker, so its
    # module-scoped fixtures (trained runs, data dirs) are built once
    for item in items:
        module = item.path.name
        item.add_marker(pytest.mark.xdist_group("shared-runs" if module in SHARED_RUNS else module))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; its CPU twin runs instead")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory):
    """One synthetic data dir for the end-to-end training tests of several modules; each test
    writes its own run names under it."""
    from pipeline_helpers import make_data_dir

    root = tmp_path_factory.mktemp("shared")
    # several shards: with one, ranks could agree on batches by accident of the data
    make_data_dir(root / "data", docs_per_shard=(8, 8, 8, 8, 8), val_docs=(10,))
    return root


@pytest.fixture(scope="session")
def two_rank_zero2(shared_data):
    """Losses of the reference run that several launch modes must reproduce exactly: 4 ZeRO-2
    steps, 2 processes on one node (torchrun --standalone), a global batch of 8 windows as 2
    accumulation steps of 2 windows per rank, validating at steps 2 and 4; the windows it trained
    on are in batches/ref."""
    from pipeline_helpers import REF_VAL, metrics, run_train

    env = {"GLOO_SOCKET_IFNAME": "lo", "GOLDFINCH_BATCH_LOG": str(shared_data / "batches" / "ref")}
    run_train(shared_data, "train.run_name=ref-2rank-zero2", "train.max_steps=4", "train.global_batch=8",
              "train.micro_batch=2", "train.zero_stage=2", "train.export=false", *REF_VAL, nproc=2,
              command=True, env=env)  # torchrun itself: the reference of the launch modes
    rows = metrics(shared_data, "ref-2rank-zero2")
    assert [r["tokens"] for r in rows] == [2 * 4 * 32 * s for s in (1, 2, 3, 4)]
    return [r["loss"] for r in rows]


@pytest.fixture(scope="session")
def plain_run(shared_data):
    """`plain_run(stage)`: losses of a 5-step single-rank run without phases under that ZeRO
    stage, on shared_data (run name plain-z<stage>); run once, on first use."""
    from pipeline_helpers import metrics, run_train

    done = {}

    def get(stage: int) -> list[float]:
        if stage not in done:
            run_train(shared_data, f"train.run_name=plain-z{stage}", "train.max_steps=5",
                      f"train.zero_stage={stage}", "train.export=false")
            done[stage] = [r["loss"] for r in metrics(shared_data, f"plain-z{stage}")]
        return done[stage]
    return get


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3 API server (moto) on 127.0.0.1 for this test process; see tests/s3_server.py."""
    from s3_server import s3_server

    with s3_server() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh bucket on the loopback S3 server, with the environment pointing at it: `s3://<name>`."""
    from s3_server import apply_environment, new_bucket

    apply_environment(monkeypatch, s3_endpoint)
    return f"s3://{new_bucket(s3_endpoint)}"
