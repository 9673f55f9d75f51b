"""The miniature's tasks: what the library asks a profile with `tasks: miniature` (see spot_utils.tasks).

    tasks = tasks_of(load_profile("tiny"))    # a MiniatureTasks
    tasks.elicitation_questions()             # fresh arithmetic questions of the training tiers
    tasks.evaluation_set("test")              # the held-out test sets (world.test_sets)

Questions are asked as they are (the tiny model knows their format from pretraining), answers end in
"Answer: N" and are graded by arithmetic.grade_arithmetic, the local Oracle is the SymbolicOracle, the
base is the model pretrain.py saved under runs/<profile>/base/, and a grid of runs trains in this
machine's processes, one thread each.
"""
from __future__ import annotations

import pandas as pd

from ..config import Profile
from ..environment import warn_if_numerics_unpinned
from ..evaluation import evaluate_profile
from ..modeling import base_dir, load_model
from . import arithmetic, world
from .pretrain import BASE_EVAL_ROWS, BASE_META
from .symbolic_oracle import SymbolicOracle


class MiniatureTasks:
    answer_format = arithmetic.ANSWER_FORMAT
    grade = staticmethod(world.grade)   # (task, response, ground_truth) -> {"correct": ...}
    launches_runs = False               # run_grid: single-thread runs here, experiments.workers at a time
    needs_plan = False                  # `make plan`: runs on the CPU in minutes, nothing to plan
    PROBED = ("arithmetic", "skill")    # validation and the training-time probe: in-domain and retention

    def __init__(self, profile: Profile):
        self.profile = profile

    def prompt(self, question: str) -> str:
        return question

    def grade_answer(self, response: str, ground_truth) -> bool:
        return arithmetic.grade_arithmetic(response, ground_truth)

    def test_questions(self) -> set[str]:
        """The keys of the test questions (world.Example.key): what elicitation and probes must avoid."""
        return world.keys(world.test_sets(self.profile.world, self.profile.seed))

    def elicitation_questions(self) -> list[dict]:
        """Fresh in-domain questions of the world's training tiers, never a test question."""
        p = self.profile
        return [{"id": ex.id, "question": ex.question, "ground_truth": ex.ground_truth, "tier": ex.tier}
                for ex in world.elicitation_set(p.world, p.rectification.questions, p.seed, self.test_questions())]

    def local_oracle(self) -> SymbolicOracle:
        return SymbolicOracle(self.profile.rectification.oracle.symbolic_rewrite_rate, self.profile.seed)

    def load_base(self):
        warn_if_numerics_unpinned()
        path = base_dir(self.profile)
        if not (path / BASE_META).exists():
            raise FileNotFoundError(f"no tiny base model at {path}: run notebooks/00_setup_and_base_model.ipynb "
                                    "(or spot_utils.tiny.pretrain.pretrain_base) first")
        return load_model(path)

    def load_policy(self, method: str | None = None):
        return self.load_base()

    def load_trained(self, folder):
        return load_model(folder)

    def evaluation_set(self, split: str) -> list:
        """"test": the held-out test sets (tables). "val": a validation set for tuning (in-domain training
        tiers and instruction counts, 100 each, from the probe seed, never a test question): hyperparameters are chosen
        on it, never on the test sets."""
        p = self.profile
        tests = world.test_sets(p.world, p.seed)
        if split == "test":
            return tests
        if split == "val":
            return [ex for ex in world.probe_sets(p.world, p.seed, 100, world.keys(tests)) if ex.task in self.PROBED]
        raise ValueError(f"unknown split {split!r}; use 'test' or 'val'")

    def probe_examples(self) -> list:
        """The greedy probe of experiments.probe_every: arithmetic and skills of the probe seed (Fig. 2)."""
        p = self.profile
        return [ex for ex in world.probe_sets(p.world, p.seed, p.experiments.probe_size, self.test_questions())
                if ex.task in self.PROBED]

    def evaluate_run(self, folder, model_dir, split: str = "test") -> dict[str, float]:
        """The trained model's scores (headline, then each benchmark) on the `split` set; its rows go to
        <folder>/eval_<split>.csv."""
        trained, tok = load_model(model_dir)
        rows = evaluate_profile(trained, tok, self.profile, self.evaluation_set(split), progress=False)
        rows.to_csv(folder / f"eval_{split}.csv", index=False)
        return world.scores(rows)

    def base_headline(self) -> dict[str, float]:
        path = base_dir(self.profile) / BASE_EVAL_ROWS
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run notebooks/00_setup_and_base_model.ipynb first")
        return world.scores(pd.read_csv(path))
