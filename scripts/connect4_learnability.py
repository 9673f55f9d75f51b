"""Can the tiny model learn Connect4 at all? (issue 2: the base's Connect4 calibration)

Trains a FRESH tiny Qwen3 (the profile's architecture) on Connect4 alone, with the easiest prompt we
could think of for a character-level model: rows numbered as in the paper (row 0 at the bottom) and the
paper's valid-moves line, so every answer cell can be copied from the prompt. Then it grades the
profile's 200 held-out test boards (greedy) with the paper's protocol, next to the always-"None" answer.

    .venv/bin/python scripts/connect4_learnability.py --steps 450      # ~19 CPU-minutes on 2 cores

Measured on the project machine with the first version of this script (same model, data, seeds and
schedule; seed 0, batch 48, AdamW 3e-3, 450 steps = 21,600 boards, ~19 CPU-minutes, about four times the
compute of the whole base pretraining): score 0.0% at step 150, 16.5% at 300, 26.0% at 450, against 48.0%
for always answering "None" on these boards. The base's 8% Connect4 share sees ~3,500 boards. Not part of
`make reproduce`; kept so the result can be rerun and extended (more steps, other formats).
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from spot_utils import connect4 as c4
from spot_utils.config import load_profile
from spot_utils.generation import generate
from spot_utils.tiny import world
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model
from spot_utils.tiny.pretrain import lr_at, seed_everything, task_micro_batches


def labeled_question(board: c4.Board) -> str:
    """render_compact's rows, numbered (top first), then the valid moves, the player, the two questions."""
    rows = [f"{r} {line}" for r, line in zip(reversed(range(c4.ROWS)), c4.render_compact(board).splitlines())]
    moves = "moves: " + " ".join(c4.fmt_cell(cell) for cell in c4.playable_cells(board))
    return "\n".join(rows + [moves, f"you: {board.player}", "wins for you?", "wins for opponent?"])


def example(board: c4.Board, id: str) -> world.Example:
    return world.Example(id, "connect4", "connect4", labeled_question(board), c4.answer_text(board),
                         c4.render_compact(board))


def percent(responses: list[str], boards: list[c4.Board]) -> float:
    """The paper's Connect4 score: the mean of the two per-question accuracies, in %."""
    grades = [c4.grade_connect4(text, b) for text, b in zip(responses, boards)]
    return 100 * sum(a + o for a, o in grades) / (2 * len(boards))


def score(model, tokenizer, boards: list[c4.Board]) -> tuple[float, float]:
    """(Connect4 score in %, share of answers that say None in %)."""
    outs = [text for (text,) in generate(model, [labeled_question(b) for b in boards], temperature=0,
                                         max_new_tokens=96, batch_size=200, tokenizer=tokenizer, progress=False)]
    nones = sum(text.count("None") for text in outs) / (2 * len(boards))
    return percent(outs, boards), 100 * nones


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=150)
    args = ap.parse_args()

    profile = load_profile("tiny")
    torch.set_num_threads(profile.pretrain.threads)
    seed_everything(profile.seed)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(profile.model, tokenizer, seed=profile.seed)
    tests = [c4.parse_compact(ex.ground_truth) for ex in world.test_sets(profile.world, profile.seed)
             if ex.task == "connect4"]
    always_none = c4.answer_text(c4.Board.empty())  # an empty board has no winning move: "None" twice
    print(f"always-None scores {percent([always_none] * len(tests), tests):.1f}%")
    held_out = set(tests)
    pool = [b for b in c4.generate_instances(20_000, profile.seed + 777) if b not in held_out]
    rng = random.Random(profile.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    start = time.time()
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_at(step, args.steps, 50, 0.1)
        (_, batch, _), = task_micro_batches([example(b, "c4") for b in rng.sample(pool, args.batch)], tokenizer)
        opt.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            model.eval()
            acc, nones = score(model, tokenizer, tests)
            model.train()
            print(f"step {step + 1}: loss {loss.item():.3f}, Connect4 score {acc:.1f}%, "
                  f"answers 'None' {nones:.0f}%, {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
