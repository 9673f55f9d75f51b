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
