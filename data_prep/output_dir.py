"""Guard an output dir between runs: resume one made with the same config, refuse a different one.

The first run writes `.state/run.json` (the config that decides the output, and a digest of the
input) before any shard; later runs compare against it, so a config, input or tokenizer change is
refused with a message naming what differs, unless `data.overwrite=true`. The dir is a local path
or an object-storage prefix (see storage.Store).
"""
from __future__ import annotations

import hashlib
import json

from .build_task import STATE_DIR
from .errors import UserError
from .shard_format import MANIFEST, SHARD_NAME
from .storage import PARTIAL_SUFFIX, Store

RUN_RECORD = f"{STATE_DIR}/run.json"
OWN_FILES = ("tokenizer.json", "rwkv_vocab_v20230424.txt", MANIFEST)
HINT = "pass data.overwrite=true to rebuild it, or choose another data.output"


def _ours(name: str) -> bool:
    return name in OWN_FILES or name == STATE_DIR or bool(SHARD_NAME.match(name)) or (
        name.startswith(".") and name.endswith(PARTIAL_SUFFIX))


def clear(store: Store) -> None:
    """Remove what data_prep writes (and nothing else)."""
    for name in store.names():
        if name == STATE_DIR:
            store.remove_tree(name)
        elif _ours(name):
            store.remove(name)


def _show(value) -> str:
    return json.dumps(value)


def open_output(store: Store, config: dict, overwrite: bool) -> dict | None:
    """Make the dir ready; returns the run record of an earlier run with the same config, if any."""
    if store.local and store.exists() and not store.is_dir():
        raise UserError(f"data.output={store.url()!r} is a file, not a directory")
    if overwrite:
        clear(store)
    store.makedirs()
    raw = store.read_bytes(RUN_RECORD)
    if raw is not None:
        record = json.loads(raw)
        old = record.get("config", {})
        diffs = [f"data.{k}: {_show(old.get(k))} there, {_show(v)} now"
                 for k, v in config.items() if old.get(k) != v]
        diffs += [f"data.{k}: {_show(v)} there, unknown now" for k, v in old.items() if k not in config]
        if diffs:
            raise UserError(f"{store.url()} was built with another config ({'; '.join(diffs)}); {HINT}")
        store.remove_partials()
        return record
    leftovers = [n for n in store.names() if n != STATE_DIR and not n.endswith(PARTIAL_SUFFIX)]
    if leftovers and not overwrite:
        listed = ", ".join(leftovers[:5]) + (" ..." if len(leftovers) > 5 else "")
        raise UserError(f"{store.url()} is not empty and was not made by data_prep ({listed}); {HINT}")
    return None


def check_input(store: Store, record: dict | None, input_digest: str) -> None:
    if record is not None and record.get("input_digest") != input_digest:
        raise UserError(f"the input changed since {store.url()} was started (the documents or their "
                        f"order differ); {HINT}")


def write_run_record(store: Store, config: dict, input_digest: str) -> None:
    body = {"config": config, "input_digest": input_digest}
    store.write_bytes(RUN_RECORD, json.dumps(body, indent=1).encode())


def check_tokenizer(store: Store, given_sha: str, given: str) -> None:
    """A given tokenizer must be the one an existing output was built with."""
    from .text_codec import FILES

    for name in FILES.values():
        existing = store.read_bytes(name)
        if existing is None:
            continue
        have = hashlib.sha256(existing).hexdigest()
        if have != given_sha:
            raise UserError(f"data.tokenizer={given!r} differs from the tokenizer {store.url()} was built "
                            f"with (sha256 {given_sha[:12]} vs {have[:12]}); {HINT}")


def remove_stale_shards(store: Store, planned: set[str]) -> None:
    """Shards of this name pattern that the manifest does not list (left by an earlier plan)."""
    for name in store.names():
        if SHARD_NAME.match(name) and name not in planned:
            store.remove(name)
