"""Read the documents of one piece of input: every record in order, usable or skipped with a reason.

The scan task and the build task both read through `read_piece`, so a document is accepted,
repaired or skipped the same way whichever task reads it. Files are streamed (JSONL line by line,
Parquet a row group at a time, binidx a chunk of its index at a time); a single huge document is
held once. Local paths and fsspec URLs are read alike.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from .errors import UserError
from .sources import BINIDX, JSONL, JSONL_GZ, PARQUET, TEXT
from .storage import filesystem
from .units import Piece

BINARY_PROBE = 8192  # a NUL byte in this many leading bytes marks a file as binary
READ_BLOCK = 8 << 20


@dataclass(frozen=True)
class ReadOptions:
    text_field: str
    on_invalid_utf8: str
    vocab_size: int = 0  # binidx: ids must be below it
    eot_id: int = -1  # binidx: one trailing end-of-text id is dropped


class Record(NamedTuple):
    line: int  # jsonl: line within the piece (0-based); jsonl.gz, parquet: 1-based number in the file; binidx: document number; -1: the whole file
    relid: str  # stable id relative to the input root: hashed for the train/val split
    data: object  # UTF-8 bytes or ids (np.ndarray); None when skipped
    text: str | None
    repaired: bool  # invalid UTF-8 replaced / binidx: a trailing end-of-text id dropped
    skip: tuple[str, str] | None  # (reason, detail): empty | binary | invalid_utf8 | invalid_json | missing_field | unreadable


class SkipDoc(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def digest_of(data) -> bytes:
    raw = data.tobytes() if isinstance(data, np.ndarray) else data
    return hashlib.blake2b(raw, digest_size=16).digest()


def source_of(piece: Piece, line: int, first_line: int) -> str:
    """The document's name in messages and in its sample's `.json`."""
    f = piece.file
    if f.kind == TEXT or line < 0:
        return f.path
    if f.kind == BINIDX:
        return f"{f.path}.bin#{line}"
    return f"{f.path}:{first_line + line if f.kind == JSONL else line}"


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
    if not line.strip():
        raise SkipDoc("empty", "blank line")
    decoded, repaired = _decode(line, policy)
    try:
        record = json.loads(decoded)
    except ValueError as err:
        raise SkipDoc("invalid_json", f"not JSON ({err})") from None
    return field_text(record, field, policy, repaired)


def field_text(record, field: str, policy: str, repaired: bool) -> tuple[str, bytes, bool]:
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


def _record(line: int, relid: str, parse, *args) -> Record:
    try:
        text, data, repaired = parse(*args)
    except SkipDoc as err:
        return Record(line, relid, None, None, False, (err.reason, err.detail))
    return Record(line, relid, data, text, repaired, None)


def _jsonl_lines(fs, path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of the lines that start in [start, end)."""
    with fs.open(path, "rb", block_size=READ_BLOCK) as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the rest of a line that started before `start` belongs to the unit before
        pos = f.tell()
        while pos < end:
            line = f.readline()
            if not line:
                break
            yield pos, line
            pos += len(line)


def _parquet(fs, path: str, piece: Piece, opts: ReadOptions) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    rel = piece.file.relpath
    with fs.open(path, "rb") as handle:
        pf = pq.ParquetFile(handle)
        if opts.text_field not in pf.schema_arrow.names:
            raise SkipDoc("missing_field", f"no {opts.text_field!r} column "
                                           f"(columns: {', '.join(pf.schema_arrow.names)})")
        end = pf.num_row_groups if piece.end < 0 else piece.end
        row = piece.first_row
        for g in range(piece.start, end):
            for value in pf.read_row_group(g, columns=[opts.text_field]).column(0).to_pylist():
                row += 1
                yield _record(row, f"{rel}:{row}", field_text, {opts.text_field: value},
                              opts.text_field, opts.on_invalid_utf8, False)


def _binidx(piece: Piece, opts: ReadOptions) -> Iterator[Record]:
    from .binidx import BinIdx

    data = BinIdx(piece.file.path)
    first, stop = data.document_at_byte(piece.start), data.document_at_byte(piece.end)
    rel = piece.file.relpath
    for number, ids in data.read(first, stop):
        if ids.size and (int(ids.max()) >= opts.vocab_size or int(ids.min()) < 0):
            bad = int(ids.max()) if int(ids.max()) >= opts.vocab_size else int(ids.min())
            raise UserError(f"{data.bin_path}: document {number} holds id {bad}, outside the "
                            f"tokenizer's vocabulary of {opts.vocab_size} (data.tokenizer must name the "
                            f"tokenizer the file was made with)")
        stripped = bool(ids.size) and int(ids[-1]) == opts.eot_id
        if stripped:
            ids = ids[:-1]
        if ids.size == 0:
            yield Record(number, f"{rel}.bin#{number}", None, None, False, ("empty", "no ids"))
        else:
            yield Record(number, f"{rel}.bin#{number}", ids, None, stripped, None)


def _read(piece: Piece, opts: ReadOptions) -> Iterator[Record]:
    f = piece.file
    if f.kind == BINIDX:
        yield from _binidx(piece, opts)
        return
    fs, path = filesystem(f.path)
    if f.kind == TEXT:
        yield _record(0, f.relpath, parse_text_file, fs.cat_file(path), opts.on_invalid_utf8)
    elif f.kind == JSONL:
        for index, (offset, line) in enumerate(_jsonl_lines(fs, path, piece.start, piece.end)):
            yield _record(index, f"{f.relpath}@{offset}", parse_json_line, line, opts.text_field,
                          opts.on_invalid_utf8)
    elif f.kind == JSONL_GZ:
        with fs.open(path, "rb", compression="gzip", block_size=READ_BLOCK) as handle:
            for number, line in enumerate(handle, 1):
                yield _record(number, f"{f.relpath}:{number}", parse_json_line, line, opts.text_field,
                              opts.on_invalid_utf8)
    elif f.kind == PARQUET:
        yield from _parquet(fs, path, piece, opts)
    else:
        raise AssertionError(f.kind)


def read_piece(piece: Piece, opts: ReadOptions) -> Iterator[Record]:
    """Every record of a piece in order; a file that cannot be read is one skipped record."""
    try:
        yield from _read(piece, opts)
    except SkipDoc as err:
        yield Record(-1, piece.file.relpath, None, None, False, (err.reason, err.detail))
    except UserError:  # a ValueError too, but the user's to fix, not one file's damage
        raise
    except (OSError, EOFError, ValueError) as err:  # unreadable, corrupt gzip or Parquet
        yield Record(-1, piece.file.relpath, None, None, False, ("unreadable", f"cannot read: {err}"))
