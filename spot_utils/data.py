"""JSONL files with schema checks: every record of a pair file, and every error, names its line.

The pair record (DESIGN section 5): id, prompt, question, rejected, chosen, ground_truth,
change_ratio, source, plus free-form metadata under any other key.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

PAIR_FIELDS = {"id": (str, int), "prompt": str, "question": str, "rejected": str, "chosen": str,
               "ground_truth": (str, int, float), "change_ratio": (int, float), "source": str}


class DataError(ValueError):
    """A JSONL file has a bad line or a record misses a field."""


def iter_jsonl(path: str | Path):
    """(line number, record) for every record of a JSONL file. Blank lines are allowed; a line that is
    not a JSON object raises DataError naming the file and the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def read_jsonl(path: str | Path, required: dict[str, Any] | None = None) -> list[dict]:
    """Read a JSONL file. Blank lines are allowed; anything else that is not a JSON object, or a
    record missing a required field or of the wrong type, raises DataError naming file, line, field."""
    records = []
    for lineno, rec in iter_jsonl(path):
        if required:
            check_record(rec, required, f"{path}, line {lineno}")
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
        if name == "change_ratio" and not (0.0 <= value <= 1.0 and not math.isnan(value)):
            raise DataError(f"{where}: field 'change_ratio' must be in [0, 1], got {value!r}")


def write_jsonl(path: str | Path, records: Iterable[dict], required: dict[str, Any] | None = None) -> int:
    """Write records (validated first when `required` is given) atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(records)
    if required:
        for i, rec in enumerate(records):
            check_record(rec, required, f"record {i} for {path}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(records)


def read_pairs(path: str | Path) -> list[dict]:
    return read_jsonl(path, PAIR_FIELDS)


def write_pairs(path: str | Path, pairs: Iterable[dict]) -> int:
    return write_jsonl(path, pairs, PAIR_FIELDS)
