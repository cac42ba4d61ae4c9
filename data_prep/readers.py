"""Read documents out of source files: a scan that checks every one and notes where it lives, and
a re-read by those notes for the task that tokenizes a shard.

Both go through the same parsing functions, so a document is accepted, repaired or skipped the
same way whichever process reads it. Files are streamed (JSONL line by line), so a huge corpus is
never held in memory; a single huge document is held once.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from typing import Iterable, Iterator, NamedTuple

from .errors import UserError
from .sources import JSONL, JSONL_GZ, PARQUET, TEXT, SourceFile

BINARY_PROBE = 8192  # a NUL byte in this many leading bytes marks a file as binary


class DocRef(NamedTuple):
    """Where a usable document lives, enough to read it again and check it is unchanged."""
    source: str  # shown to users and stored with the sample: a path, or path:N (1-based)
    relid: str  # the same id relative to the input root: hashed for the train/val split
    path: str
    kind: str
    loc: object  # text: None; jsonl: (offset, length); jsonl.gz: line number; parquet: (group, row)
    nbytes: int  # UTF-8 bytes of the document's text
    digest: str  # blake2b-128 of those bytes
    repaired: bool  # invalid UTF-8 replaced with U+FFFD


class Skipped(NamedTuple):
    reason: str  # empty | binary | invalid_utf8 | invalid_json | missing_field | unreadable | duplicate
    source: str
    detail: str


class SkipDoc(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def digest_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _decode(raw: bytes, policy: str) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as err:
        if policy == "skip":
            raise SkipDoc("invalid_utf8", f"invalid UTF-8 at byte {err.start}") from None
        return raw.decode("utf-8", "replace"), True


def _encode(text: str, policy: str) -> tuple[bytes, str, bool]:
    """UTF-8 bytes of a decoded JSON/Parquet string (lone surrogates count as invalid UTF-8)."""
    try:
        return text.encode("utf-8"), text, False
    except UnicodeEncodeError as err:
        if policy == "skip":
            raise SkipDoc("invalid_utf8", f"unpaired surrogate at character {err.start}") from None
        data = text.encode("utf-8", "replace")
        return data, data.decode("utf-8"), True


def parse_text_file(raw: bytes, policy: str) -> tuple[str, bytes, bool]:
    """A whole file as one document: (text, its UTF-8 bytes, repaired)."""
    if not raw:
        raise SkipDoc("empty", "empty file")
    if b"\x00" in raw[:BINARY_PROBE]:
        raise SkipDoc("binary", f"binary file (NUL byte in the first {BINARY_PROBE} bytes)")
    text, repaired = _decode(raw, policy)
    return text, (text.encode("utf-8") if repaired else raw), repaired


def parse_json_line(line: bytes, field: str, policy: str) -> tuple[str, bytes, bool]:
    """One JSONL record: the string under `field`."""
    if not line.strip():
        raise SkipDoc("empty", "blank line")
    decoded, repaired = _decode(line, policy)
    try:
        record = json.loads(decoded)
    except ValueError as err:
        raise SkipDoc("invalid_json", f"not JSON ({err})") from None
    return _field_text(record, field, policy, repaired)


def _field_text(record, field: str, policy: str, repaired: bool) -> tuple[str, bytes, bool]:
    if not isinstance(record, dict) or field not in record:
        raise SkipDoc("missing_field", f"no {field!r} field")
    value = record[field]
    if isinstance(value, bytes):
        value, fixed = _decode(value, policy)
        repaired = repaired or fixed
    if not isinstance(value, str):
        raise SkipDoc("missing_field", f"field {field!r} is {type(value).__name__}, not text")
    if not value:
        raise SkipDoc("empty", f"field {field!r} is empty")
    data, text, fixed = _encode(value, policy)
    return text, data, repaired or fixed


def _lines(f) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, line) of a binary file, streamed."""
    offset = 0
    for number, line in enumerate(f, 1):
        yield number, offset, line
        offset += len(line)


def _parquet_rows(path: str, field: str, row_groups: Iterable[int] | None = None):
    """(row group, row in group, 1-based row in file, value) of the text column."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise SkipDoc("missing_field", f"no {field!r} column (columns: {', '.join(pf.schema_arrow.names)})")
    starts, total = [], 0
    for g in range(pf.num_row_groups):
        starts.append(total)
        total += pf.metadata.row_group(g).num_rows
    for g in (range(pf.num_row_groups) if row_groups is None else row_groups):
        column = pf.read_row_group(g, columns=[field]).column(0)
        for r, value in enumerate(column.to_pylist()):
            yield g, r, starts[g] + r + 1, value


def scan_file(src: SourceFile, field: str, policy: str) -> Iterator[DocRef | Skipped]:
    """Every document of one file in order, each either usable (DocRef) or Skipped with a reason."""
    try:
        yield from _scan(src, field, policy)
    except SkipDoc as err:
        yield Skipped(err.reason, src.path, err.detail)
    except (OSError, EOFError, ValueError) as err:  # unreadable, corrupt gzip or Parquet
        yield Skipped("unreadable", src.path, f"cannot read: {err}")


def _scan(src: SourceFile, field: str, policy: str) -> Iterator[DocRef | Skipped]:
    def record(source: str, relid: str, loc, parse, *args) -> DocRef | Skipped:
        try:
            _, data, repaired = parse(*args)
        except SkipDoc as err:
            return Skipped(err.reason, source, err.detail)
        return DocRef(source, relid, src.path, src.kind, loc, len(data), digest_of(data), repaired)

    if src.kind == TEXT:
        with open(src.path, "rb") as f:
            raw = f.read()
        yield record(src.path, src.relpath, None, parse_text_file, raw, policy)
    elif src.kind in (JSONL, JSONL_GZ):
        opener = gzip.open if src.kind == JSONL_GZ else open
        with opener(src.path, "rb") as f:
            for number, offset, line in _lines(f):
                loc = number if src.kind == JSONL_GZ else (offset, len(line))
                yield record(f"{src.path}:{number}", f"{src.relpath}:{number}", loc,
                             parse_json_line, line, field, policy)
    elif src.kind == PARQUET:
        for g, r, number, value in _parquet_rows(src.path, field):
            yield record(f"{src.path}:{number}", f"{src.relpath}:{number}", (g, r),
                         _field_text, {field: value}, field, policy, False)
    else:
        raise AssertionError(src.kind)


def _read_group(path: str, kind: str, refs: list[DocRef], field: str, policy: str):
    """(ref, text) for refs that all live in one file, in the refs' order."""
    if kind == TEXT:
        for ref in refs:
            with open(path, "rb") as f:
                yield ref, parse_text_file(f.read(), policy)
    elif kind == JSONL:
        with open(path, "rb") as f:
            for ref in refs:
                offset, length = ref.loc
                f.seek(offset)
                yield ref, parse_json_line(f.read(length), field, policy)
    elif kind == JSONL_GZ:
        wanted = {ref.loc: ref for ref in refs}
        last = max(wanted)
        with gzip.open(path, "rb") as f:
            for number, _, line in _lines(f):
                if number in wanted:
                    yield wanted[number], parse_json_line(line, field, policy)
                if number >= last:
                    break
    elif kind == PARQUET:
        wanted = {ref.loc: ref for ref in refs}
        groups = sorted({g for g, _ in wanted})
        for g, r, _, value in _parquet_rows(path, field, groups):
            if (g, r) in wanted:
                yield wanted[(g, r)], _field_text({field: value}, field, policy, False)
    else:
        raise AssertionError(kind)


def read_documents(refs: list[DocRef], field: str, policy: str) -> Iterator[tuple[DocRef, str]]:
    """Each ref's text, checked against the digest the scan recorded (the source must not change)."""
    start = 0
    while start < len(refs):
        end = start
        while end < len(refs) and refs[end].path == refs[start].path:
            end += 1
        group = refs[start:end]
        seen = 0
        try:
            for ref, parsed in _read_group(group[0].path, group[0].kind, group, field, policy):
                text, data, _ = parsed
                if len(data) != ref.nbytes or digest_of(data) != ref.digest:
                    raise UserError(f"{ref.source} changed while data_prep was running; run it again")
                seen += 1
                yield ref, text
        except SkipDoc as err:
            raise UserError(f"{group[0].path} changed while data_prep was running ({err.detail}); "
                            "run it again") from None
        except (OSError, EOFError) as err:
            raise UserError(f"cannot read {group[0].path} again: {err}") from None
        if seen != len(group):
            raise UserError(f"{group[0].path} changed while data_prep was running (records are "
                            "missing); run it again")
        start = end

