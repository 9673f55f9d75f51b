import pytest

from spot_utils.data import DataError, read_jsonl, read_pairs, write_jsonl, write_pairs

PAIR = {"id": "q1", "prompt": "<|user|>q<|end|><|assistant|>", "question": "q", "rejected": "a", "chosen": "b",
        "ground_truth": 5, "change_ratio": 0.5, "source": "symbolic", "tier": "steps=2"}


def test_pairs_round_trip(tmp_path):
    assert write_pairs(tmp_path / "p.jsonl", [PAIR, {**PAIR, "id": "q2"}]) == 2
    back = read_pairs(tmp_path / "p.jsonl")
    assert back[0] == PAIR and back[1]["id"] == "q2"


def test_errors_name_file_line_and_field(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": 1}\n\nnot json\n')
    with pytest.raises(DataError, match=r"p.jsonl, line 3: not valid JSON"):
        read_jsonl(p)
    bad = dict(PAIR)
    del bad["chosen"]
    write_jsonl(p, [PAIR, bad])
    with pytest.raises(DataError, match=r"p.jsonl, line 2: missing field 'chosen'"):
        read_pairs(p)
    write_jsonl(p, [{**PAIR, "change_ratio": 1.7}])
    with pytest.raises(DataError, match=r"line 1: field 'change_ratio' must be in \[0, 1\]"):
        read_pairs(p)
    with pytest.raises(DataError, match="field 'rejected' must be str"):
        write_pairs(p, [{**PAIR, "rejected": None}])
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "nope.jsonl")


# -----------------------------------------------------------------------------
# bad inputs (issue 13): refused with file, line and field; a failed write leaves nothing behind


def test_files_are_utf8_whatever_the_locale(tmp_path):
    """LC_ALL=C without UTF-8 mode: reading and writing used the locale's ASCII and failed on 'é'."""
    import os
    import subprocess
    import sys

    code = ("import locale, sys; from spot_utils.data import read_jsonl, write_jsonl\n"
            "assert locale.getpreferredencoding(False).lower() in ('ansi_x3.4-1968', 'ascii', 'us-ascii')\n"
            "p = sys.argv[1]; write_jsonl(p, [{'id': '\\u00e9', 'text': 'na\\u00efve \\u2192 ok'}])\n"
            "print(ascii(read_jsonl(p)))")  # the command line itself must be ASCII under LC_ALL=C
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "u.jsonl")], env=env, capture_output=True,
                       text=True, encoding="utf-8", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "'na\\xefve \\u2192 ok'" in r.stdout
    assert (tmp_path / "u.jsonl").read_bytes() == '{"id": "é", "text": "naïve → ok"}\n'.encode()


def test_undecodable_bytes_name_file_and_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b'{"id": 1}\n{"id": "caf\xc3\n')
    with pytest.raises(DataError, match=r"p.jsonl, line 2: not valid UTF-8 \(byte 0xc3 at column 12"):
        read_jsonl(p)


def test_a_bom_is_accepted(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a"}\n{"id": "b"}\n')
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b"]


def test_nan_is_neither_read_nor_written(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": 1}\n{"id": 2, "usage": {"tokens": [1, NaN]}}\n')
    with pytest.raises(DataError, match=r"p.jsonl, line 2: field 'usage.tokens\[1\]' is NaN or Infinity"):
        read_jsonl(p)
    p.write_text('{"id": 1, "change_ratio": 1e999}\n')
    with pytest.raises(DataError, match=r"line 1: field 'change_ratio' is NaN or Infinity"):
        read_jsonl(p)
    with pytest.raises(DataError, match=r"writing .*q.jsonl, line 2: field 'score' cannot be written as JSON: nan"):
        write_jsonl(tmp_path / "q.jsonl", [{"id": 1}, {"id": 2, "score": float("nan")}])
    with pytest.raises(DataError, match=r"line 1: field 'ground_truth' must be a finite number"):
        write_pairs(tmp_path / "q.jsonl", [{**PAIR, "ground_truth": float("inf")}])
    assert not (tmp_path / "q.jsonl").exists()


def test_a_failed_write_leaves_the_old_file_and_no_tmp(tmp_path):
    p = tmp_path / "p.jsonl"
    write_jsonl(p, [{"id": 1}])
    with pytest.raises(DataError, match=r"writing .*p.jsonl, line 3: field 'when' cannot be written as JSON"):
        write_jsonl(p, [{"id": 1}, {"id": 2}, {"id": 3, "when": object()}])
    assert read_jsonl(p) == [{"id": 1}] and sorted(f.name for f in tmp_path.iterdir()) == ["p.jsonl"]

    def broken_records():  # a generator that fails half way: nothing is written either
        yield {"id": 1}
        raise RuntimeError("upstream failed")
    with pytest.raises(RuntimeError):
        write_jsonl(p, broken_records())
    assert read_jsonl(p) == [{"id": 1}] and sorted(f.name for f in tmp_path.iterdir()) == ["p.jsonl"]


def test_write_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    write_jsonl(tmp_path / "p.jsonl", [{"id": 1}])
    assert events[:2] == ["fsync", "rename"]


def test_pair_schema_refuses_what_training_cannot_use(tmp_path):
    p = tmp_path / "p.jsonl"
    with pytest.raises(DataError, match=r"writing .*p.jsonl, line 2: field 'id' 'q1' repeats line 1"):
        write_pairs(p, [PAIR, PAIR])
    with pytest.raises(DataError, match=r"line 1: field 'chosen' is empty"):
        write_pairs(p, [{**PAIR, "chosen": "  "}])
    write_jsonl(p, [PAIR, {**PAIR, "id": "q2"}, {**PAIR, "id": "q2"}])
    with pytest.raises(DataError, match=r"p.jsonl, line 3: field 'id' 'q2' repeats line 2"):
        read_pairs(p)
    write_jsonl(p, [{**PAIR, "chosen": ""}])
    with pytest.raises(DataError, match=r"p.jsonl, line 1: field 'chosen' is empty"):
        read_pairs(p)
    # 1 and "1" are different ids (JSON keeps the type)
    assert write_pairs(p, [{**PAIR, "id": 1}, {**PAIR, "id": "1"}]) == 2
