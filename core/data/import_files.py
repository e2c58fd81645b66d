"""Dataset import, step 1: read a file into numbered records (core.data.datasets_io is the entry point).

Reading
    JSONL, JSON (a list of records, or one record), CSV/TSV, parquet, a ``datasets`` folder saved with
    ``save_to_disk`` (or a .zip of one), and .txt (one prompt per line); text files may be gzipped. Text files must be UTF-8
    (a UTF-8 BOM is fine); any other encoding is refused with a clear error instead of guessed.

Rows are numbered from 1: the record number, which in JSONL and .txt files is the line number. A record that
cannot be read is kept as a `RowError` in its place, so one bad line never aborts reading; a file that cannot be
read at all is an `ImportFileError`.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from core.errors import NotFound, ValidationError


class ImportFileError(ValidationError):
    """The file as a whole cannot be read: unknown type, wrong encoding, not a dataset, unknown shape."""

    code = "import_file_invalid"


class RowError(Exception):
    """One record is malformed; carries the message shown next to its row number."""


def _decode(data: bytes, filename: str) -> str:
    """UTF-8 text (BOM allowed); anything else is a clear error that says what to do."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError(f"{filename} is UTF-16 encoded (it starts with a UTF-16 byte order mark)",
                              hint="save it as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 in > out`")
    if b"\x00" in data[:65536]:
        raise ImportFileError(f"{filename} is not a text file (it contains NUL bytes: binary data, or UTF-16 "
                              "without a byte order mark)",
                              hint="import UTF-8 JSONL, JSON, CSV or txt, parquet, or a save_to_disk folder")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ImportFileError(
            f"{filename} is not UTF-8: byte 0x{data[exc.start]:02x} on line {line} cannot be decoded "
            "(the file is probably Latin-1 / Windows-1252, or binary)",
            hint="re-save the file as UTF-8, e.g. `iconv -f latin1 -t UTF-8 in > out`") from None


def _jsonl(text: str) -> list[tuple[int, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                records.append((number, RowError(f"not JSON: {exc.msg} (column {exc.colno})")))
    return records


def _json(text: str, filename: str) -> list[tuple[int, Any]]:
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":   # several JSON values: it is JSON Lines with a .json name
            return _jsonl(text)
        raise ImportFileError(f"{filename} is not valid JSON: {exc.msg} at line {exc.lineno}",
                              hint="fix the file, or save one record per line as .jsonl") from None
    if isinstance(loaded, dict):   # {"data": [...]} wrappers, else one record
        lists = [v for v in loaded.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        loaded = lists[0] if len(loaded) == 1 and lists else [loaded]
    if not isinstance(loaded, list):
        raise ImportFileError(f"{filename} holds a JSON {type(loaded).__name__}, not a list of records",
                              hint="use a JSON list of objects or JSONL")
    return list(enumerate(loaded, 1))


def _csv(text: str, delimiter: str | None) -> list[tuple[int, Any]]:
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[tuple[int, Any]] = []
    for number, row in enumerate(reader, 1):
        if None in row:
            records.append((number, RowError(f"{len(reader.fieldnames or []) + len(row[None])} fields, "
                                             f"the header has {len(reader.fieldnames or [])}")))
        else:
            records.append((number, {k.strip(): _cell(v) for k, v in row.items() if k is not None}))
    return records


def _cell(value: str | None) -> Any:
    """CSV cells are text; message lists written as JSON are read back as lists."""
    if value is not None and value.lstrip().startswith("[") and value.rstrip().endswith("]"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def _parquet(path: Path) -> list[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(enumerate(pq.read_table(path).to_pylist(), 1))
    except (pa.ArrowException, OSError) as exc:
        raise ImportFileError(f"{path.name} is not a readable parquet file: {exc}",
                              hint="re-export it, e.g. with Dataset.to_parquet") from None


def _saved_dataset(folder: Path, filename: str) -> list[tuple[int, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
        raise ImportFileError(f"{filename} is not a dataset saved with save_to_disk: {exc}",
                              hint="save it with Dataset.save_to_disk(folder), or export JSONL or parquet") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        split = "train" if "train" in loaded else splits[0] if len(splits) == 1 else None
        if split is None:
            raise ImportFileError(f"{filename} holds several splits ({', '.join(splits)}) and none is 'train'",
                                  hint="save the split you want on its own: dataset_dict[split].save_to_disk(...)")
        loaded = loaded[split]
    return list(enumerate(loaded.to_list(), 1))


def read_records(path: Path | str, filename: str | None = None) -> list[tuple[int, Any]]:
    """(row number, record) for every record in the file; unparseable records hold a RowError."""
    path = Path(path)
    filename = filename or path.name
    if not path.exists():
        raise NotFound(f"{path} does not exist", hint="check the path")
    if path.is_dir():
        return _saved_dataset(path, filename)
    with path.open("rb") as handle:
        magic = handle.read(4)
    suffix = Path(filename).suffix.lower()
    if magic == b"PAR1":
        return _parquet(path)
    if magic == b"PK\x03\x04" or suffix == ".zip":
        return _zipped_dataset(path, filename)
    if suffix == ".parquet":
        raise ImportFileError(f"{filename} is not a parquet file (no PAR1 header)",
                              hint="check the file; it may be truncated")
    if suffix == ".arrow":
        raise ImportFileError(f"{filename} is a bare Arrow shard", hint="import the whole save_to_disk folder")
    data = path.read_bytes()
    if magic[:2] == b"\x1f\x8b":   # gzip, as Anthropic HH ships (train.jsonl.gz)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ImportFileError(f"{filename} is a broken gzip file: {exc}", hint="download it again") from None
        filename = filename.removesuffix(".gz").removesuffix(".GZ")
        suffix = Path(filename).suffix.lower()
    text = _decode(data, filename)
    if suffix == ".txt":
        return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if suffix in (".csv", ".tsv"):
        return _csv(text, "\t" if suffix == ".tsv" else None)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(text)
    if suffix == ".json" or text.lstrip().startswith("["):
        return _json(text, filename)
    if text.lstrip().startswith("{"):
        return _jsonl(text)
    raise ImportFileError(f"Cannot tell what kind of file {filename} is",
                          hint="use .jsonl, .json, .csv, .tsv, .parquet, .txt, or a save_to_disk folder (or .zip)")


def _zipped_dataset(path: Path, filename: str) -> list[tuple[int, Any]]:
    """A save_to_disk folder uploaded as a zip (browsers upload files, not folders)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ImportFileError(f"{filename} is not a valid zip file", hint="zip the save_to_disk folder again") from None
    with archive, tempfile.TemporaryDirectory(prefix="studio-import-") as tmp:
        root = Path(tmp).resolve()
        for member in archive.namelist():
            if not (root / member).resolve().is_relative_to(root):
                raise ImportFileError(f"{filename} contains an unsafe path {member!r}", hint="zip the folder again")
        archive.extractall(root)
        return _saved_dataset(find_saved_dataset(root, filename), filename)


def find_saved_dataset(root: Path, filename: str) -> Path:
    """The save_to_disk folder inside an unpacked upload (the outermost one holding its metadata)."""
    infos = list(root.rglob("dataset_info.json")) + list(root.rglob("dataset_dict.json"))
    if not infos:
        raise ImportFileError(f"{filename} does not contain a dataset saved with save_to_disk",
                              hint="upload the folder written by Dataset.save_to_disk (or a zip of it)")
    return min((p.parent for p in infos), key=lambda p: len(p.parts))
