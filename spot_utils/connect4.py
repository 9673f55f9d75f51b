"""Connect4 engine for the SPoT Connect4 task.

Used in two places: to build (question, answer) pairs for a tiny from-scratch model,
and by the paper's evaluation protocol (text board in, two lists of winning moves out).

Conventions: 6 rows x 7 columns, row 0 is the BOTTOM row, column 0 the left.
Cells hold "X", "O" or "_" (empty). X moves first. A cell is written "(r,c)".
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

ROWS, COLS = 6, 7
EMPTY = "_"
PLAYERS = ("X", "O")
Cell = tuple[int, int]

SYSTEM_PROMPT = """\
You are an expert Connect Four analyst.

Rules: the board has 6 rows and 7 columns. Two players, X and O, take turns dropping one piece \
into a column; the piece falls to the lowest empty cell of that column. A player wins by having \
four (or more) of their pieces in an unbroken line: horizontally, vertically, or along either \
diagonal.

Input format: the board is given one row per line, from the top row (row 5) down to the bottom \
row (row 0). Every cell is written as (row,column):content, where content is X, O, or _ for an \
empty cell; row 0 is the bottom and column 0 is the left. A line "Valid moves: ..." lists the \
cells where a piece can be placed right now (the lowest empty cell of each column that is not \
full). The last line, "You are player X" or "You are player O", tells you which player you are; \
it is your turn to move, and the other player is your opponent.

Task: find every valid move that would immediately complete four in a row for you, and every \
valid move that would immediately complete four in a row for your opponent if it were their \
turn. Only cells from the valid-moves list can count. Then choose your move.

Answer format: you may reason first, but end your answer with exactly these three lines:
[Intermediate Thinking Results 1: (r,c), (r,c)]
[Intermediate Thinking Results 2: (r,c)]
Chosen Move: (a,b)
Result 1 lists your own immediately winning cells and Result 2 your opponent's, each as (r,c) \
separated by ", ", or None when there are none. Chosen Move is the single cell you play.\
"""


@dataclass(frozen=True)
class Board:
    """A position: cells[r][c] with row 0 at the bottom, and the player to move ("you")."""

    cells: tuple[tuple[str, ...], ...]
    player: str

    def __post_init__(self):
        if len(self.cells) != ROWS or any(len(row) != COLS for row in self.cells):
            raise ValueError(f"board must be {ROWS} rows x {COLS} columns")
        bad = {v for row in self.cells for v in row} - {"X", "O", EMPTY}
        if bad:
            raise ValueError(f"unknown cell values {sorted(bad)}; expected X, O or {EMPTY}")
        if self.player not in PLAYERS:
            raise ValueError(f"player must be X or O, got {self.player!r}")

    @staticmethod
    def empty() -> "Board":
        return Board(tuple((EMPTY,) * COLS for _ in range(ROWS)), "X")

    @property
    def opponent(self) -> str:
        return other(self.player)


def other(player: str) -> str:
    return "O" if player == "X" else "X"


def fmt_cell(cell: Cell) -> str:
    return f"({cell[0]},{cell[1]})"


def fmt_cells(cells) -> str:
    """'(r,c), (r,c)' for a non-empty list, 'None' for an empty one."""
    return ", ".join(fmt_cell(c) for c in cells) if cells else "None"


# -----------------------------------------------------------------------------
# rules

def playable_cells(board: Board) -> list[Cell]:
    """The lowest empty cell of each non-full column, in column order."""
    out = []
    for c in range(COLS):
        for r in range(ROWS):
            if board.cells[r][c] == EMPTY:
                out.append((r, c))
                break
    return out


_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical, diagonal /, diagonal \


def _run_through(cells, r: int, c: int, player: str, dr: int, dc: int) -> int:
    """Length of the line of `player` through (r,c) along (dr,dc), counting (r,c) itself."""
    n = 1
    for sign in (1, -1):
        rr, cc = r + sign * dr, c + sign * dc
        while 0 <= rr < ROWS and 0 <= cc < COLS and cells[rr][cc] == player:
            n += 1
            rr, cc = rr + sign * dr, cc + sign * dc
    return n


def completes_four(board: Board, cell: Cell, player: str) -> bool:
    """Would a `player` piece on `cell` make a line of four or more? (ignores what is on `cell`)"""
    r, c = cell
    return any(_run_through(board.cells, r, c, player, dr, dc) >= 4 for dr, dc in _DIRECTIONS)


def winning_moves(board: Board, player: str) -> list[Cell]:
    """Playable cells where `player` would immediately complete four in a row, sorted."""
    return sorted(cell for cell in playable_cells(board) if completes_four(board, cell, player))


def play(board: Board, col: int) -> Board:
    """Drop the mover's piece into column `col` and pass the turn."""
    for r in range(ROWS):
        if board.cells[r][col] == EMPTY:
            rows = [list(row) for row in board.cells]
            rows[r][col] = board.player
            return Board(tuple(tuple(row) for row in rows), board.opponent)
    raise ValueError(f"column {col} is full")


def legality_problems(board: Board) -> list[str]:
    """Reasons why `board` cannot arise in a game starting with X (empty list = legal)."""
    problems = []
    for c in range(COLS):
        col = [board.cells[r][c] for r in range(ROWS)]
        if any(col[r] == EMPTY and col[r + 1] != EMPTY for r in range(ROWS - 1)):
            problems.append(f"column {c} has a piece above an empty cell")
    nx = sum(row.count("X") for row in board.cells)
    no = sum(row.count("O") for row in board.cells)
    if nx - no not in (0, 1):
        problems.append(f"piece counts X={nx}, O={no}: X must equal O or be one more")
    elif board.player != ("X" if nx == no else "O"):
        problems.append(f"player {board.player} to move is inconsistent with X={nx}, O={no}")
    return problems


# -----------------------------------------------------------------------------
# text formats

def render_board(board: Board) -> str:
    """The paper's text format: rows 5..0 as '(r,c):V', valid moves, 'You are player P'."""
    lines = [" ".join(f"({r},{c}):{board.cells[r][c]}" for c in range(COLS))
             for r in reversed(range(ROWS))]
    lines.append(f"Valid moves: {fmt_cells(playable_cells(board))}")
    lines.append(f"You are player {board.player}")
    return "\n".join(lines)


_CELL_TOKEN = re.compile(r"\((\d),(\d)\):([XO_])")
_PLAYER_LINE = re.compile(r"you are player\s*:?\s*([XO])\.?", re.IGNORECASE)


def _check_gravity(board: Board) -> None:
    for c in range(COLS):
        for r in range(ROWS - 1):
            if board.cells[r][c] == EMPTY and board.cells[r + 1][c] != EMPTY:
                raise ValueError(f"cell ({r + 1},{c}) holds a piece above the empty cell ({r},{c})")


def parse_board(text: str) -> Board:
    """Parse the paper text format (blank lines and surrounding whitespace are fine).

    The valid-moves line is ignored (recomputed from the cells). Raises ValueError naming
    the offending line on malformed text, and on floating pieces (a piece above an empty cell).
    """
    grid: dict[Cell, str] = {}
    player = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.lower().startswith("valid moves"):
            continue
        m = _PLAYER_LINE.fullmatch(line)
        if m:
            if player is not None:
                raise ValueError(f"line {lineno}: second 'You are player' line")
            player = m.group(1).upper()
        elif line.startswith("("):
            for tok in line.split():
                t = _CELL_TOKEN.fullmatch(tok)
                if not t:
                    raise ValueError(f"line {lineno}: bad cell {tok!r}; expected '(r,c):X', "
                                     f"'(r,c):O' or '(r,c):_'")
                cell = (int(t.group(1)), int(t.group(2)))
                if not (cell[0] < ROWS and cell[1] < COLS):
                    raise ValueError(f"line {lineno}: cell {fmt_cell(cell)} is off the "
                                     f"{ROWS}x{COLS} board")
                if cell in grid:
                    raise ValueError(f"line {lineno}: cell {fmt_cell(cell)} given twice")
                grid[cell] = t.group(3)
        else:
            raise ValueError(f"line {lineno}: unrecognised line {line[:60]!r}")
    missing = [fmt_cell((r, c)) for r in range(ROWS) for c in range(COLS) if (r, c) not in grid]
    if missing:
        raise ValueError(f"board is missing {len(missing)} cell(s): {', '.join(missing[:8])}")
    if player is None:
        raise ValueError("missing the 'You are player X' / 'You are player O' line")
    board = Board(tuple(tuple(grid[r, c] for c in range(COLS)) for r in range(ROWS)), player)
    _check_gravity(board)
    return board


def render_compact(board: Board) -> str:
    """6 lines of 7 chars (top row first, '.' = empty) then 'you: X'. For the tiny model."""
    lines = ["".join("." if v == EMPTY else v for v in board.cells[r])
             for r in reversed(range(ROWS))]
    return "\n".join(lines + [f"you: {board.player}"])


def parse_compact(text: str) -> Board:
    """Inverse of render_compact. Raises ValueError naming the offending line."""
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if len(lines) != ROWS + 1:
        raise ValueError(f"expected {ROWS} board lines and a 'you: X' line, got {len(lines)} "
                         f"non-empty lines")
    rows = []
    for lineno, line in lines[:ROWS]:
        if len(line) != COLS or set(line) - {"X", "O", "."}:
            raise ValueError(f"line {lineno}: expected {COLS} characters from 'X', 'O', '.', "
                             f"got {line!r}")
        rows.append(tuple(EMPTY if ch == "." else ch for ch in line))
    lineno, last = lines[ROWS]
    m = re.fullmatch(r"you:\s*([XO])", last)
    if not m:
        raise ValueError(f"line {lineno}: expected 'you: X' or 'you: O', got {last!r}")
    board = Board(tuple(reversed(rows)), m.group(1))
    _check_gravity(board)
    return board


# -----------------------------------------------------------------------------
# questions and answers

def question_text(board: Board, compact: bool) -> str:
    """The board (compact or paper format) followed by the two questions."""
    if compact:
        return f"{render_compact(board)}\nwins for you?\nwins for opponent?"
    return (f"{render_board(board)}\n\n"
            f"Question 1: which valid moves would immediately complete four in a row for you "
            f"(player {board.player})?\n"
            f"Question 2: which valid moves would immediately complete four in a row for your "
            f"opponent (player {board.opponent})?")


def answer_text(board: Board) -> str:
    """The canonical answer in the paper's protocol format (two lines)."""
    mine = winning_moves(board, board.player)
    theirs = winning_moves(board, board.opponent)
    return (f"[Intermediate Thinking Results 1: {fmt_cells(mine)}]\n"
            f"[Intermediate Thinking Results 2: {fmt_cells(theirs)}]")


# -----------------------------------------------------------------------------
# grading

# "[Intermediate Thinking Results k: ...]", optionally with the list itself in brackets.
# The content may not span lines or contain brackets, so a truncated block never swallows the next.
_RESULT = re.compile(
    r"\[\s*Intermediate\s+Thinking\s+Results\s*([12])\s*:\s*\[?([^\[\]\n]*?)\]?\s*\]",
    re.IGNORECASE)
_ANSWER_CELL = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_NONE_WORDS = {"", "none", "empty", "nothing", "no moves", "n/a", "null"}


def _parse_cells(content: str) -> set[Cell] | None:
    """Set of cells in a result list, empty set for 'None', None if unreadable."""
    found = _ANSWER_CELL.findall(content)
    if found:
        # absurdly long numbers are off the board anyway; don't feed them to int()
        return {(int(r), int(c)) if len(r) < 6 and len(c) < 6 else (-1, -1) for r, c in found}
    if content.strip().strip(".").strip().lower() in _NONE_WORDS:
        return set()
    return None


def grade_connect4(response: str, board: Board) -> tuple[bool, bool]:
    """(your winning moves correct, opponent's correct), from the LAST result block of each kind.

    Order, duplicates and spaces inside cells do not matter; a missing or unreadable block is
    wrong. Never raises on any response string.
    """
    try:
        last: dict[str, str] = {}
        for m in _RESULT.finditer(response if isinstance(response, str) else str(response)):
            last[m.group(1)] = m.group(2)
        truth = {"1": set(winning_moves(board, board.player)),
                 "2": set(winning_moves(board, board.opponent))}
        return tuple(k in last and _parse_cells(last[k]) == truth[k] for k in ("1", "2"))
    except Exception:  # a grader must never crash an evaluation run
        return (False, False)


# -----------------------------------------------------------------------------
# instance generator

def _random_game_states(rng: random.Random) -> list[Board]:
    """States before each move of one game between two uniformly random players."""
    board, states = Board.empty(), []
    while True:
        moves = playable_cells(board)
        if not moves:
            return states  # full board: draw
        states.append(board)
        r, c = rng.choice(moves)
        if completes_four(board, (r, c), board.player):
            return states  # the mover just won; the game is over
        board = play(board, c)


def has_any_win(board: Board) -> bool:
    return bool(winning_moves(board, "X") or winning_moves(board, "O"))


def generate_instances(n: int, seed: int, max_no_win_fraction: float = 0.2) -> list[Board]:
    """Exactly n distinct positions from random self-play, deterministic in `seed`.

    States are taken from whole random games (a natural spread of game lengths); at most
    `max_no_win_fraction` of the result has no winning move for either side (those are
    uniformly downsampled). Raises RuntimeError if n instances cannot be collected.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= max_no_win_fraction <= 1.0:
        raise ValueError(f"max_no_win_fraction must be in [0, 1], got {max_no_win_fraction}")
    rng = random.Random(seed)
    cap = int(max_no_win_fraction * n)  # max number of no-win instances
    seen: set[Board] = set()
    with_win, no_win = [], []
    max_games = 50 * n + 100  # a random game yields ~10+ new states; this is a generous bound
    for _ in range(max_games):
        if len(with_win) + min(len(no_win), cap) >= n:
            break
        for b in _random_game_states(rng):
            if b not in seen:
                seen.add(b)
                (with_win if has_any_win(b) else no_win).append(b)
    else:
        if len(with_win) + min(len(no_win), cap) < n:
            raise RuntimeError(f"could only collect {len(with_win)} positions with a win and "
                               f"{len(no_win)} without after {max_games} games; cannot return "
                               f"{n} with max_no_win_fraction={max_no_win_fraction}")
    k_no = min(len(no_win), cap)
    picked = rng.sample(no_win, k_no) + rng.sample(with_win, n - k_no)
    rng.shuffle(picked)
    return picked
