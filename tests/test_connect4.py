import random

import pytest

from spot_utils.connect4 import (
    SYSTEM_PROMPT, Board, answer_text, completes_four, generate_instances, grade_connect4,
    has_any_win, legality_problems, parse_board, parse_compact, play, playable_cells,
    question_text, render_board, render_compact, winning_moves,
)


def board(text: str) -> Board:
    """Hand-made board from the compact format (top row first)."""
    return parse_compact(text)


def already_won(b: Board) -> bool:
    """Some four in a row is already on the board."""
    return any(v != "_" and completes_four(b, (r, c), v)
               for r, row in enumerate(b.cells) for c, v in enumerate(row))


def swap(b: Board) -> Board:
    """Same position with the colours exchanged, so every case is checked for both players."""
    sw = {"X": "O", "O": "X", "_": "_"}
    return Board(tuple(tuple(sw[v] for v in row) for row in b.cells), sw[b.player])


# Each case: board with X to move, X's winning moves, O's winning moves.
HORIZONTAL = ("""
.......
.......
.......
.......
OOO....
XXX....
you: X""", [(0, 3)], [])  # O's (1,3) would need (0,3) filled first: not a winning move

VERTICAL = ("""
.......
.......
.......
X......
X.O....
X.O.O..
you: X""", [(3, 0)], [])

DIAG_UP = ("""
.......
.......
.......
..XO...
.XOX...
XOXO..O
you: X""", [(3, 3)], [])  # O's / diagonal needs (3,4), whose column is empty

DIAG_DOWN = ("""
.......
.......
X......
OX.....
XOX....
OOX...O
you: X""", [(0, 3)], [])

FIVE = ("""
.......
.......
.......
.......
OO..O..
XX.XX.O
you: X""", [(0, 2)], [])  # completing five also counts

BOTH = ("""
.......
.......
.......
.......
.OOO...
.XXX...
you: X""", [(0, 0), (0, 4)], [(1, 0), (1, 4)])  # O's cells are not playable...

BOTH_PLAYABLE = ("""
.......
.......
.......
.O.....
.O.....
.OXXX..
you: X""", [(0, 5)], [(3, 1)])


@pytest.mark.parametrize("case", [HORIZONTAL, VERTICAL, DIAG_UP, DIAG_DOWN, FIVE, BOTH_PLAYABLE],
                         ids=["horizontal", "vertical", "diag_up", "diag_down", "five", "both"])
@pytest.mark.parametrize("swapped", [False, True], ids=["x", "o"])
def test_winning_moves(case, swapped):
    text, x_wins, o_wins = case
    b = board(text)
    assert legality_problems(b) == []
    if swapped:  # colours exchanged: X's wins become O's
        b, x_wins, o_wins = swap(b), o_wins, x_wins
    assert winning_moves(b, "X") == x_wins
    assert winning_moves(b, "O") == o_wins


def test_unplayable_four_is_not_a_win():
    b = board(BOTH[0])
    assert winning_moves(b, "X") == [(0, 0), (0, 4)]
    assert winning_moves(b, "O") == []  # (1,0) and (1,4) float over empty cells
    b2 = play(play(b, 0), 6)  # X fills (0,0) (and wins, but we only check O's threats), O plays 6
    assert (1, 0) in winning_moves(b2, "O")


def test_full_column():
    b = Board.empty()
    for _ in range(6):
        b = play(b, 3)
    assert len(playable_cells(b)) == 6 and all(c != 3 for _, c in playable_cells(b))
    assert playable_cells(b)[:3] == [(0, 0), (0, 1), (0, 2)]
    with pytest.raises(ValueError, match="column 3 is full"):
        play(b, 3)
    assert "Valid moves: (0,0), (0,1), (0,2), (0,4), (0,5), (0,6)" in render_board(b)


def test_legality_problems():
    assert legality_problems(Board.empty()) == []
    cells = [list("_" * 7) for _ in range(6)]
    cells[1][0] = "X"
    assert any("column 0" in p for p in legality_problems(Board(tuple(map(tuple, cells)), "O")))
    cells = [list("XX_____")] + [list("_" * 7) for _ in range(5)]
    assert any("piece counts" in p for p in legality_problems(Board(tuple(map(tuple, cells)), "X")))
    cells = [list("X______")] + [list("_" * 7) for _ in range(5)]
    assert any("inconsistent" in p for p in legality_problems(Board(tuple(map(tuple, cells)), "X")))


# ----------------------------------------------------------------------------- formats

def test_render_board_format():
    b = board(HORIZONTAL[0])
    lines = render_board(b).split("\n")
    assert len(lines) == 8
    assert lines[0] == " ".join(f"(5,{c}):_" for c in range(7))
    assert lines[5] == "(0,0):X (0,1):X (0,2):X (0,3):_ (0,4):_ (0,5):_ (0,6):_"
    assert lines[6] == "Valid moves: (2,0), (2,1), (2,2), (0,3), (0,4), (0,5), (0,6)"
    assert lines[7] == "You are player X"


def test_render_compact_format():
    b = board(VERTICAL[0])
    assert render_compact(b) == VERTICAL[0].strip()


@pytest.fixture(scope="module")
def instances():
    return generate_instances(2000, seed=0)


def test_round_trips(instances):
    for b in [Board.empty(), *instances[:100]]:
        assert parse_board(render_board(b)) == b
        assert parse_compact(render_compact(b)) == b


def test_parse_board_is_lenient_on_whitespace_and_valid_moves():
    b = board(DIAG_UP[0])
    lines = render_board(b).split("\n")
    lines[6] = "Valid moves: (9,9)"  # ignored: recomputed from the cells
    text = "\n\n  " + "\n\n".join("  " + ln + "  " for ln in lines) + "\n\n"
    assert parse_board(text) == b
    assert parse_board("\n".join(lines[:6] + lines[7:])) == b  # no valid-moves line at all


def _paper(b: Board) -> list[str]:
    return render_board(b).split("\n")


@pytest.mark.parametrize("mutate, message", [
    (lambda ls: ls[:7], "You are player"),
    (lambda ls: ls[:1] + ls[2:], r"missing 7 cell\(s\): \(4,0\)"),
    (lambda ls: [ls[0].replace("(5,3):_", "(5,3):Z")] + ls[1:], r"line 1: bad cell '\(5,3\):Z'"),
    (lambda ls: [ls[0].replace("(5,3):_", "(5,3)_")] + ls[1:], "line 1: bad cell"),
    (lambda ls: ls[:2] + ["hello there"] + ls[2:], "line 3: unrecognised line 'hello there'"),
    (lambda ls: [ls[0].replace("(5,3)", "(1,3)")] + ls[1:], r"line 5: cell \(1,3\) given twice"),
    (lambda ls: [ls[0].replace("(5,3)", "(7,3)")] + ls[1:], r"line 1: cell \(7,3\) is off"),
    (lambda ls: [ls[0].replace("(5,3):_", "(5,3):X")] + ls[1:], r"\(5,3\) holds a piece above"),
    (lambda ls: ls + ["You are player O"], "line 9: second 'You are player'"),
])
def test_parse_board_errors(mutate, message):
    with pytest.raises(ValueError, match=message):
        parse_board("\n".join(mutate(_paper(board(VERTICAL[0])))))


@pytest.mark.parametrize("text, message", [
    ("X......\n" * 6, "expected 6 board lines"),
    (".......\n" * 5 + "......\nyou: X", "line 6: expected 7 characters"),
    (".......\n" * 5 + "...Q...\nyou: X", "line 6: expected 7 characters"),
    (".......\n" * 6 + "me: X", "line 7: expected 'you: X'"),
    (".......\n" * 4 + "X......\n.......\nyou: O", "above the empty cell"),
])
def test_parse_compact_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_compact(text)


# ----------------------------------------------------------------------------- Q/A and grading

def test_question_and_answer_text():
    b = board(BOTH_PLAYABLE[0])
    assert answer_text(b) == ("[Intermediate Thinking Results 1: (0,5)]\n"
                              "[Intermediate Thinking Results 2: (3,1)]")
    assert answer_text(board(BOTH[0])) == ("[Intermediate Thinking Results 1: (0,0), (0,4)]\n"
                                           "[Intermediate Thinking Results 2: None]")
    assert question_text(b, compact=True).startswith(render_compact(b))
    assert question_text(b, compact=False).startswith(render_board(b))
    for token in ("[Intermediate Thinking Results 1:", "[Intermediate Thinking Results 2:",
                  "Chosen Move:", "You are player", "Valid moves", "row 0"):
        assert token in SYSTEM_PROMPT


def test_answer_text_grades_correct(instances):
    for b in instances[:300]:
        assert grade_connect4(answer_text(b), b) == (True, True)


B = board(BOTH[0])  # X wins at (0,0), (0,4); O has none


@pytest.mark.parametrize("response, expected", [
    ("[Intermediate Thinking Results 1: (0,0), (0,4)]\n[Intermediate Thinking Results 2: None]",
     (True, True)),
    ("[Intermediate Thinking Results 1: ( 0 , 4 ),(0,0) , (0,4)]\n"
     "[intermediate thinking results 2: none]", (True, True)),  # spaces, order, duplicates, case
    ("[Intermediate Thinking Results 1: [(0,4), (0,0)]]\n[Intermediate Thinking Results 2: []]",
     (True, True)),  # python-style lists
    ("**[Intermediate Thinking Results 1: (0,0), (0,4)]**\n[Intermediate Thinking Results 2: ]",
     (True, True)),
    ("[Intermediate Thinking Results 1: (0,0)]\n[Intermediate Thinking Results 2: None]",
     (False, True)),
    ("[Intermediate Thinking Results 1: (0,0), (0,4), (1,0)]", (False, False)),  # 2 missing
    ("[Intermediate Thinking Results 2: None]", (False, True)),  # 1 missing
    ("[Intermediate Thinking Results 1: None]\n[Intermediate Thinking Results 2: (1,0)]\n"
     "on second thought:\n"
     "[Intermediate Thinking Results 1: (0,0), (0,4)]\n[Intermediate Thinking Results 2: None]",
     (True, True)),  # the last block wins
    ("[Intermediate Thinking Results 1: (0,0), (0,4)]\n[Intermediate Thinking Results 2: None]\n"
     "hmm, actually [Intermediate Thinking Results 2: (1,0)]", (True, False)),
    ("[Intermediate Thinking Results 1: (0,0), (0,4)\n[Intermediate Thinking Results 2: None]",
     (False, True)),  # truncated bracket does not swallow the next block
    ("[Intermediate Thinking Results 1: I am not sure]\n[Intermediate Thinking Results 2: None]",
     (False, True)),
    ("[Intermediate Thinking Results 1: (0,0), (0,99999999999999999999999999)]", (False, False)),
    ("[Intermediate Thinking Results 1: (0," + "9" * 5000 + ")]", (False, False)),
    ("", (False, False)),
    ("Chosen Move: (0,0)", (False, False)),
])
def test_grade_connect4(response, expected):
    assert grade_connect4(response, B) == expected


def test_grader_never_raises_on_garbage():
    rng = random.Random(0)
    pieces = ["[", "]", "(", ")", ",", " ", "\n", "0", "3", "99999999999", "None", ":",
              "Intermediate Thinking Results 1:", "Intermediate Thinking Results 2:",
              "\x00", "é", "\\", "[Intermediate Thinking Results 1: (0,0), (0,4)]"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40)))
        result = grade_connect4(text, B)
        assert isinstance(result, tuple) and len(result) == 2
        assert all(isinstance(x, bool) for x in result)
    assert grade_connect4("[" * 20000 + "(" * 20000, B) == (False, False)
    assert grade_connect4(None, B) == (False, False)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- generator

def test_generator_deterministic(instances):
    assert generate_instances(2000, seed=0) == instances
    assert generate_instances(300, seed=1) != generate_instances(300, seed=2)
    assert generate_instances(0, seed=0) == []


def test_generator_properties(instances):
    assert len(instances) == 2000
    assert len(set(instances)) == 2000  # Board is (cells, player): no duplicate states
    no_win = sum(not has_any_win(b) for b in instances)
    assert no_win <= 0.2 * len(instances)
    for b in instances:
        assert legality_problems(b) == [], render_compact(b)
        assert playable_cells(b)  # not full
        assert not already_won(b), render_compact(b)
    # positions from many stages of the game, not only openings or endgames
    pieces = {sum(v != "_" for row in b.cells for v in row) for b in instances}
    assert len(pieces) >= 25


def test_generator_no_win_fraction_zero():
    xs = generate_instances(200, seed=3, max_no_win_fraction=0.0)
    assert len(xs) == 200 and all(has_any_win(b) for b in xs)


def test_generator_bad_args():
    with pytest.raises(ValueError):
        generate_instances(10, seed=0, max_no_win_fraction=1.5)
    with pytest.raises(ValueError):
        generate_instances(-1, seed=0)
