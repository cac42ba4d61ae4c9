"""Test instrumentation stays out of normal runs: with no GOLDFINCH_FAULTS / GOLDFINCH_BATCH_LOG the
trainer gets the no-op base and no instrument module is loaded; when asked for, they act only at
their step and rank, and several compose."""
import subprocess
import sys

import pytest
import torch

from pipeline.instruments import Instruments, base, from_environment
from pipeline.instruments.batch_log import read_steps


def test_a_normal_run_gets_the_no_op_base_and_loads_no_instrument():
    code = ("import os, sys; [os.environ.pop(k, None) for k in ('GOLDFINCH_FAULTS', 'GOLDFINCH_BATCH_LOG')]; "
            "import pipeline.train; from pipeline.instruments import from_environment, Instruments; "
            "assert type(from_environment(0)) is Instruments; "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.instruments.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pipeline.instruments.base']"


def test_faults_act_only_at_their_step_and_rank(monkeypatch):
    monkeypatch.delenv("GOLDFINCH_BATCH_LOG", raising=False)
    monkeypatch.setenv("GOLDFINCH_FAULTS", "nan_loss:3:1, enospc_in_save:6")
    rank1, rank0 = from_environment(1), from_environment(0)
    one = torch.tensor(1.0)
    assert rank1.loss(3, one).isnan() and rank1.loss(2, one) == 1 and rank0.loss(3, one) == 1
    with pytest.raises(OSError, match="No space left"):
        with rank0.checkpoint_writes(6):
            pass
    with rank1.checkpoint_writes(6), rank0.checkpoint_writes(5):
        pass


@pytest.mark.parametrize("bad", ["nan_loss", "nan_loss:x", "explode:3", "nan_loss:1:2:3"])
def test_a_fault_that_does_not_parse_is_named(monkeypatch, bad):
    monkeypatch.setenv("GOLDFINCH_FAULTS", bad)
    with pytest.raises(ValueError, match=f"GOLDFINCH_FAULTS: cannot parse '{bad}'"):
        from_environment(0)


def test_several_instruments_compose(monkeypatch, tmp_path):
    import numpy as np

    monkeypatch.setenv("GOLDFINCH_FAULTS", "nan_loss:2")
    monkeypatch.setenv("GOLDFINCH_BATCH_LOG", str(tmp_path))
    both = from_environment(0)
    assert isinstance(both, base.Several) and len(both.parts) == 2
    tokens = np.arange(6).reshape(2, 3)
    both.batch(2, 0, np.zeros((2, 4), dtype=np.int64), tokens)
    both.batch(2, 0, np.zeros((2, 4), dtype=np.int64), tokens + 1)  # read again after a resume
    assert list(read_steps(tmp_path)) == [2] and len(read_steps(tmp_path)[2]) == 2
    assert both.loss(2, torch.tensor(1.0)).isnan() and both.loss(1, torch.tensor(1.0)) == 1
    with both.validation(torch.nn.Linear(1, 1), 1), both.checkpoint_writes(1):
        both.after_step(1)
        both.checkpoint_written(1)
    assert Instruments().loss(2, torch.tensor(1.0)) == 1
