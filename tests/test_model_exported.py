import json

import pytest
import torch

from model import load_exported, save_exported

from model_helpers import VOCAB, tiny_model


@pytest.mark.parametrize("arch", ["goldfinch", "llama"])
def test_export_roundtrip_gives_same_logits(tmp_path, arch):
    model = tiny_model(arch)
    save_exported(model.state_dict(), model.cfg, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["arch"] == arch
    loaded = load_exported(tmp_path)
    idx = torch.randint(0, VOCAB, (2, 11))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])


def test_load_exported_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_exported(tmp_path)
