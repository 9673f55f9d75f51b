"""JSONL files with schema checks: every record of a pair file, and every error, names its line.

The pair record (DESIGN section 5): id, prompt, question, rejected, chosen, ground_truth,
change_ratio, source, plus free-form metadata under any other key.

Files are UTF-8 whatever the locale (a BOM at the start, as some editors save one, is accepted);
JSON has no NaN or Infinity, so neither is read or written.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

PAIR_FIELDS = {"id": (str, int), "prompt": str, "question": str, "rejected": str, "chosen": str,
               "ground_truth": (str, int, float), "change_ratio": (int, float), "source": str}
# what training cannot use even when the type is right
_NON_EMPTY = ("chosen",)

_BOM = "\ufeff"


class DataError(ValueError):
    """A JSONL file has a bad line or a record misses a field."""


def iter_jsonl(path: str | Path):
    """(line number, record) for every record of a JSONL file. Blank lines are allowed; a line that is
    not UTF-8, not a JSON object, or holds NaN/Infinity raises DataError naming the file and the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open("rb") as f:  # bytes: an undecodable line is named, whatever the locale
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}, line {lineno}: not valid UTF-8 (byte {raw[e.start]:#04x} at "
                                f"column {e.start + 1}; a write cut short?)") from None
            if lineno == 1:
                line = line.removeprefix(_BOM)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
            if (name := _non_finite(rec)) is not None:
                raise DataError(f"{path}, line {lineno}: field '{name}' is NaN or Infinity, which JSON does not have")
            yield lineno, rec


def read_jsonl(path: str | Path, required: dict[str, Any] | None = None, unique_ids: bool = False) -> list[dict]:
    """Read a JSONL file. Blank lines are allowed; anything else that is not a JSON object, or a
    record missing a required field or of the wrong type, raises DataError naming file, line, field.
    unique_ids: a repeated 'id' is an error too."""
    records, first = [], {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}, line {lineno}"
        if required:
            check_record(rec, required, where)
        if unique_ids:
            _check_unique(rec, first, lineno, where)
        records.append(rec)
    return records


def check_record(rec: dict, required: dict[str, Any], where: str) -> None:
    for name, types in required.items():
        if name not in rec:
            raise DataError(f"{where}: missing field '{name}' (required: {', '.join(required)})")
        value = rec[name]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise DataError(f"{where}: field '{name}' must be {want}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(f"{where}: field '{name}' must be a finite number, got {value!r}")
        if name == "change_ratio" and not 0.0 <= value <= 1.0:
            raise DataError(f"{where}: field 'change_ratio' must be in [0, 1], got {value!r}")
        if name in _NON_EMPTY and not value.strip():
            raise DataError(f"{where}: field '{name}' is empty; a pair needs a text to train on")


def write_jsonl(path: str | Path, records: Iterable[dict], required: dict[str, Any] | None = None,
                unique_ids: bool = False) -> int:
    """Write records (validated first when `required` is given) atomically: a temporary file,
    fsync'd, renamed over `path`. Nothing is written unless every record is valid; an error names
    the line the record would have had and its field, and leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(records)
    first: dict = {}
    for i, rec in enumerate(records):
        where = f"writing {path}, line {i + 1}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a dict, got {type(rec).__name__}")
        if required:
            check_record(rec, required, where)
        if unique_ids:
            _check_unique(rec, first, i + 1, where)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            for i, rec in enumerate(records):
                f.write(_dumps(rec, f"writing {path}, line {i + 1}") + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return len(records)


def read_pairs(path: str | Path) -> list[dict]:
    return read_jsonl(path, PAIR_FIELDS, unique_ids=True)


def write_pairs(path: str | Path, pairs: Iterable[dict]) -> int:
    return write_jsonl(path, pairs, PAIR_FIELDS, unique_ids=True)


def _check_unique(rec: dict, first: dict, lineno: int, where: str) -> None:
    rid = rec.get("id")
    key = (type(rid).__name__, rid) if isinstance(rid, (str, int)) else repr(rid)
    if key in first:
        raise DataError(f"{where}: field 'id' {rid!r} repeats line {first[key]}; ids must be unique")
    first[key] = lineno


def _dumps(rec: dict, where: str) -> str:
    try:
        return json.dumps(rec, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        for name, value in rec.items():  # name the field that cannot be written
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise DataError(f"{where}: field '{name}' cannot be written as JSON: {value!r:.80} ({e})") from None
        raise DataError(f"{where}: record cannot be written as JSON ({e})") from None


def _non_finite(obj, prefix=""):
    """The dotted name of the first NaN/Infinity in a parsed record, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        name = f"{prefix}.{k}" if prefix and isinstance(obj, dict) else f"{prefix}[{k}]" if prefix else str(k)
        if (found := _non_finite(v, name)) is not None:
            return found
    return None


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (it is only once the folder is); some file systems cannot fsync one."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
