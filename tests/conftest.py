"""Suite-wide settings: Triton runs compiled on a CUDA device and through its CPU interpreter only
where there is none (or when TRITON_INTERPRET=1 is asked for); GPU tests skip without CUDA.

Triton reads TRITON_INTERPRET when a kernel is decorated, so it is decided here, before any test
module imports a kernel (`import torch` does not import triton)."""
import os

import pytest
import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; its CPU twin runs instead")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
