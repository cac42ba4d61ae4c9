"""The data-dir format has one owner: what data_prep's format module writes, the trainer reads back,
and a `file://` URL is the same local dir to the writer's storage layer and the trainer's reader."""
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from data_prep import shard_format, storage
from data_prep.text_codec import load_codec
from pipeline.data.data_loader import DataDir

from data_prep_helpers import read_samples
from pipeline_helpers import make_data_dir


def test_shards_written_by_the_format_module_read_back_in_the_trainer(tmp_path):
    docs, eot = make_data_dir(tmp_path, docs_per_shard=(3, 2), val_docs=(2,), max_len=8)
    data = DataDir.open(tmp_path)
    read = [d for split in ("train", "val") for shard in data.splits[split] for d in data.read(shard)]
    assert [shard.name for shard in data.splits["train"]] == [shard_format.shard_name("train", i)
                                                              for i in range(2)]
    assert all(shard_format.SHARD_NAME.match(s.name) for split in data.splits.values() for s in split)
    assert len(read) == len(docs) and all((a == b).all() for a, (_, b) in zip(read, docs.values()))
    assert data.eot == eot
    # an independent reader (webdataset) sees the same documents: the layout is WebDataset's
    samples = read_samples(tmp_path)
    assert [s["key"] for s in samples][:2] == ["d000000", "d000001"]
    assert all((s["tokens"] == b).all() for s, (_, b) in zip(samples, docs.values()))


def test_a_manifest_that_is_not_json_is_named_by_both_sides(tmp_path):
    make_data_dir(tmp_path, docs_per_shard=(2,), val_docs=(1,), max_len=5)
    (tmp_path / shard_format.MANIFEST).write_text("{")
    with pytest.raises(UserError, match="manifest.json is not JSON"):
        DataDir.open(tmp_path)
    with pytest.raises(UserError, match="manifest.json is not JSON"):
        shard_format.read_manifest(storage.Store(str(tmp_path)))


def test_file_urls_are_local_paths_to_writer_and_reader(tmp_path):
    make_data_dir(tmp_path, docs_per_shard=(2,), val_docs=(1,), max_len=5)
    url = tmp_path.as_uri()
    assert url.startswith("file://") and not storage.is_remote(url)
    assert storage.is_remote("s3://bucket/dir") and not storage.is_remote(str(tmp_path))
    assert storage.local_path(url) == tmp_path and storage.join(url, "x") == tmp_path / "x"
    assert storage.Store(url).local and storage.Store(url).names() == storage.Store(str(tmp_path)).names()
    via_url, via_path = DataDir.open(url), DataDir.open(tmp_path)
    assert isinstance(via_url.path, Path) and via_url.path == via_path.path
    assert via_url.manifest_sha256 == via_path.manifest_sha256
    shard = via_url.splits["train"][0]
    assert all(np.array_equal(a, b) for a, b in zip(via_url.read(shard), via_path.read(shard)))
    assert load_codec(url).sha256 == via_path.tokenizer_sha256
