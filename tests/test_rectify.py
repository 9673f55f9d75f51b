import random
import re

import pytest

from spot_utils.rectify import (
    MissingChangeRatioError, change_ratio, common_prefix_length, edit_spans, filter_pairs,
    lcs_length, lcs_length_dp,
)


def word_ids(*texts: str) -> list[list[int]]:
    """Word-level token ids with a shared vocabulary: a stand-in for a real tokenizer."""
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(w, len(vocab)) for w in re.findall(r"\w+|[^\w\s]", t)] for t in texts]


REJECTED = ("We need 3 apples per pie and 4 pies, so 3 + 4 = 7 apples. "
            "The answer is 7.")
CHOSEN = ("We need 3 apples per pie and 4 pies, so 3 * 4 = 12 apples. "
          "The answer is 12.")


# ----------------------------------------------------------------------------- change ratio

def test_change_ratio_cases():
    assert change_ratio([1, 2, 3], [1, 2, 3]) == 0.0
    assert change_ratio([1, 2, 3], [4, 5, 6, 7]) == 1.0
    assert change_ratio([1, 2, 3, 4], [1, 2, 9, 4]) == pytest.approx(0.25)  # one token replaced
    assert change_ratio([1, 2, 3, 4], [1, 2, 4]) == 0.0  # deletion only: y+ is inside y-
    assert change_ratio([1, 2, 4], [1, 2, 3, 4]) == pytest.approx(0.25)  # one insertion
    assert change_ratio([], [1, 2]) == 1.0
    with pytest.raises(ValueError, match="empty chosen"):
        change_ratio([1, 2], [])


def test_change_ratio_on_text():
    rej, cho = word_ids(REJECTED, CHOSEN)
    # three words differ ("+"->"*", "7"->"12" twice) out of len(cho)
    assert change_ratio(rej, cho) == pytest.approx(3 / len(cho))


def test_lcs_matches_dp_on_random_pairs():
    rng = random.Random(0)
    for _ in range(200):
        k = rng.choice([2, 3, 5, 10])  # small alphabets: long, non-trivial LCS
        a = [rng.randrange(k) for _ in range(rng.randrange(61))]
        b = [rng.randrange(k) for _ in range(rng.randrange(61))]
        assert lcs_length(a, b) == lcs_length_dp(a, b), (a, b)


def test_lcs_matches_dp_on_text_pairs():
    texts = [
        (REJECTED, CHOSEN),
        ("the cat sat on the mat and the dog sat on the log",
         "the dog sat on the mat and the cat sat on the log"),
        ("First, factor x^2 - 5x + 6 = (x - 2)(x - 3). So x = 2 or x = 3.",
         "First, factor x^2 - 5x + 6 = (x - 2)(x - 3). So the roots are x = 2 and x = 3."),
        ("a b c d e f g", "g f e d c b a"),
    ]
    for r, c in texts:
        a, b = word_ids(r, c)
        assert lcs_length(a, b) == lcs_length_dp(a, b)
    # large token ids (real vocabularies are ~150k) and other sequence types
    a = [151_643, 7, 99_999, 7, 3]
    b = (7, 151_643, 3, 99_999)
    assert lcs_length(a, b) == lcs_length_dp(a, b) == 2


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([5], [1]) == 0


# ----------------------------------------------------------------------------- filter

def test_filter_pairs_counts_and_boundary():
    pairs = [{"id": i, "change_ratio": r} for i, r in enumerate([0.0, 0.1, 0.3, 0.30000001, 1.0])]
    kept, report = filter_pairs(pairs, gamma=0.3)
    assert [p["id"] for p in kept] == [0, 1, 2]  # ratio exactly gamma is kept
    assert report == {"total": 5, "kept": 3, "dropped_over_gamma": 2}
    assert filter_pairs(pairs, 1.0)[1] == {"total": 5, "kept": 5, "dropped_over_gamma": 0}
    assert filter_pairs(pairs, 0)[1] == {"total": 5, "kept": 1, "dropped_over_gamma": 4}
    assert filter_pairs([], 0.5) == ([], {"total": 0, "kept": 0, "dropped_over_gamma": 0})


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan"), "0.3", None, True])
def test_filter_pairs_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        filter_pairs([{"id": 0, "change_ratio": 0.1}], gamma)


def test_filter_pairs_missing_ratio_names_the_pair():
    pairs = [{"id": "a", "change_ratio": 0.1}, {"id": "gsm8k-17"}]
    with pytest.raises(ValueError, match="gsm8k-17"):
        filter_pairs(pairs, 0.5)
    with pytest.raises(KeyError):  # also catchable as a KeyError
        filter_pairs(pairs, 0.5)
    with pytest.raises(MissingChangeRatioError, match="index 0"):
        filter_pairs([{"change_ratio": None}], 0.5)
    with pytest.raises(ValueError, match="'b'"):
        filter_pairs([{"id": "b", "change_ratio": float("nan")}], 0.5)


# ----------------------------------------------------------------------------- edit spans

@pytest.mark.parametrize("rejected, chosen, spans", [
    ([1, 2, 3], [1, 2, 3], []),
    ([1, 2, 3, 4, 5], [1, 2, 9, 4, 5], [(2, 3)]),  # replacement
    ([1, 2, 4, 5], [1, 2, 3, 3, 4, 5], [(2, 4)]),  # insertion
    ([1, 2, 3, 4, 5], [1, 2, 4, 5], []),  # deletion leaves nothing to highlight in y+
    ([1, 2, 3, 4, 5], [9, 2, 3, 4, 8], [(0, 1), (4, 5)]),  # edits at both ends
    ([1, 2, 3, 4, 5, 6], [1, 7, 3, 4, 8, 6], [(1, 2), (4, 5)]),  # two separate edits
    ([], [1, 2], [(0, 2)]),
    ([1, 2], [], []),
    ([1, 2, 3], [4, 5, 6], [(0, 3)]),
])
def test_edit_spans_hand_cases(rejected, chosen, spans):
    assert edit_spans(rejected, chosen) == spans


def test_edit_spans_text():
    rej, cho = word_ids(REJECTED, CHOSEN)
    words = re.findall(r"\w+|[^\w\s]", CHOSEN)
    assert [" ".join(words[s:e]) for s, e in edit_spans(rej, cho)] == ["*", "12", "12"]


def test_edit_spans_consistent_with_lcs():
    rng = random.Random(1)
    for _ in range(100):
        a = [rng.randrange(4) for _ in range(rng.randrange(40))]
        b = [rng.randrange(4) for _ in range(rng.randrange(40))]
        spans = edit_spans(a, b)
        outside = [t for j, t in enumerate(b) if not any(s <= j < e for s, e in spans)]
        assert len(outside) == lcs_length(a, b)
        assert lcs_length(outside, a) == len(outside)  # the kept tokens are a subsequence of a
        assert all(0 <= s < e <= len(b) for s, e in spans)
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # disjoint, merged


def test_edit_spans_refuses_huge_middles():
    with pytest.raises(ValueError, match="max_cells"):
        edit_spans(list(range(100)), list(range(100, 200)), max_cells=1000)
    # long shared prefix/suffix are cheap regardless of length
    a = list(range(20_000))
    b = a[:10_000] + [-1] + a[10_000:]
    assert edit_spans(a, b, max_cells=1000) == [(10_000, 10_001)]
