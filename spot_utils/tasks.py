"""A profile's tasks: what differs between the miniature world and the paper's benchmarks, as one object.

The library (pipeline, training, experiments) runs the same code for every profile; where a profile's
world differs (which questions are elicited, how an answer is graded, where the base policy comes
from, how a trained model is scored) it asks the object the profile's `tasks` key names:

    model, tokenizer = load_base(profile)  # the profile's base policy
    tasks = tasks_of(profile)              # profile.tasks: "paper" (below) or "miniature" (spot_utils.tiny)
    tasks.elicitation_questions()          # fresh in-domain questions: [{id, question, ground_truth, tier}]
    tasks.prompt(question)                 # the text the policy is asked
    tasks.grade_answer(response, truth)    # is an elicited answer correct
    tasks.answer_format                    # the final-answer line the Oracle must end with
    tasks.local_oracle()                   # what the local Oracle server answers with (empty base_url)
    tasks.load_base()                      # (model, tokenizer) of the base policy
    tasks.load_policy(method)              # the base as training loads it
    tasks.load_trained(folder)             # (model, tokenizer) a run saved
    tasks.probe_examples()                 # the greedy probe of experiments.probe_every (Fig. 2)
    tasks.evaluate_run(folder, model_dir, split)   # a trained run's test scores (its rows are written beside it)
    tasks.base_headline()                  # the base's headline scores, from notebook 00's rows
    tasks.launches_runs                    # True: one multi-process job per run (experiments.launcher)
    tasks.needs_plan                       # True: `make plan` has costs and checks to show

This module is the one seam between the library and the miniature: spot_utils.tiny is imported only
when a profile names it.
"""
from __future__ import annotations

import importlib

import pandas as pd
import torch

from . import suite_eval
from .config import Profile
from .losses import PAIR_LOSSES
from .math_grader import grade_math
from .modeling import attention_implementation, base_dir, load_model
from .oracle import DEFAULT_ANSWER_FORMAT, AnswerLineOracle
from .paper_suites import math_prompt

# profile.tasks -> "module:class" of its tasks (config.TASK_FAMILIES lists the same names)
FAMILIES = {"paper": "spot_utils.tasks:PaperTasks", "miniature": "spot_utils.tiny.tasks:MiniatureTasks"}


def tasks_of(profile: Profile):
    """The tasks object of the profile (a PaperTasks or a spot_utils.tiny.tasks.MiniatureTasks)."""
    module, name = FAMILIES[profile.tasks].split(":")
    return getattr(importlib.import_module(module), name)(profile)


def load_base(profile: Profile):
    """(model, tokenizer) of the profile's base policy: the tiny one pretrained under runs/, or the hub model."""
    return tasks_of(profile).load_base()


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class PaperTasks:
    """The paper's world (Sec. 5.1): a pretrained hub model, DAPO-Math-17k questions graded by
    math-verify, the nine suites of Table 1 (spot_utils.suite_eval), an LLM Oracle (or, with an empty
    base_url, the local AnswerLineOracle), and runs launched as multi-process jobs, as the paper trains."""

    answer_format = DEFAULT_ANSWER_FORMAT
    launches_runs = True
    needs_plan = True

    def __init__(self, profile: Profile):
        self.profile = profile

    def prompt(self, question: str) -> str:
        """The prompt the evaluation's math suites use; records keep the bare question (the Oracle's)."""
        return math_prompt(question)

    def grade_answer(self, response: str, ground_truth) -> bool:
        return grade_math(response, str(ground_truth))

    def elicitation_questions(self) -> list[dict]:
        """The paper's DAPO-Math-17k English subset through `datasets` (a clear error when offline). The
        questions are the bare problems: `prompt` asks them with the evaluation's math instruction."""
        profile, r = self.profile, self.profile.rectification
        try:
            from datasets import load_dataset

            ds = load_dataset(r.dataset_location, r.dataset_config or None, split="train")
        except Exception as e:
            raise RuntimeError(f"could not load {r.dataset} ({r.dataset_config}) through `datasets`: {e}. "
                               "The paper profile needs the Hugging Face hub (or a local cache of it).") from e
        ds = ds.shuffle(seed=profile.seed).select(range(min(r.questions, len(ds))))
        # DAPO's prompt column wraps the problem in its own answer format ("Answer: $Answer"), which would
        # contradict the boxed format the evaluation and the Oracle ask for: keep the problem only.
        head = ("Solve the following math problem step by step. The last line of your response should be of the "
                "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
        tail = '\n\nRemember to put your answer on its own line after "Answer:".'
        return [{"id": f"dapo{i:05d}", "question": row["prompt"].removeprefix(head).removesuffix(tail),
                 "ground_truth": row["solution"], "tier": "dapo"} for i, row in enumerate(ds)]

    def local_oracle(self):
        """The AnswerLineOracle: math questions it answers with the prompt's reference answer, and direct
        solutions from the profile's question set (loaded on the first direct-solve request)."""
        return AnswerLineOracle(
            answer_key=lambda: {q["question"]: q["ground_truth"] for q in self.elicitation_questions()})

    def load_base(self):
        m = self.profile.model
        return load_model(m.location, dtype=m.dtype, device=_device(), attn_implementation=m.attn_implementation)

    def load_policy(self, method: str | None = None):
        """The base as training loads it. On CPU: the Trainer / DeepSpeed places the weights (one GPU per
        process), not us. The attention kernel is chosen for where training runs (FlashAttention-2 on a
        GPU when installed). A pair method with training.shared_prefix takes SDPA for "auto":
        FlashAttention-2 takes no block mask, and on CUDA SDPA runs one on its memory-efficient kernel (an
        explicit flash_attention_2 fails in SPoTTrainer). The token methods run on plain rows and keep
        FlashAttention-2."""
        m = self.profile.model
        requested = m.attn_implementation
        if self.profile.training.shared_prefix and method in PAIR_LOSSES and requested == "auto":
            requested = "sdpa"
        return load_model(m.location, dtype=m.dtype, device="cpu",
                          attn_implementation=attention_implementation(requested, _device()))

    def load_trained(self, folder):
        """Loaded the way the base is (dtype, device, attention), so that policy and reference meet on one device."""
        m = self.profile.model
        return load_model(folder, dtype=m.dtype, device=_device(), attn_implementation=m.attn_implementation)

    def probe_examples(self) -> list:
        raise ValueError(f"profile {self.profile.name!r}: the greedy probe (experiments.probe_every) is the "
                         "miniature's; a pretrained-model profile measures skills across steps on saved "
                         "checkpoints (suite_eval.evaluate_checkpoints)")

    def evaluate_run(self, folder, model_dir, split: str = "test") -> dict[str, float]:
        """The paper's nine suites on the saved model (vLLM on a GPU): rows in <folder>/eval_test.csv."""
        return suite_eval.evaluate_run(self.profile, folder, progress=False)

    def base_headline(self) -> dict[str, float]:
        path = base_dir(self.profile) / suite_eval.BASE_ROWS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run notebooks/00_setup_and_base_model.ipynb first")
        return suite_eval.scores_from_rows(pd.read_csv(path))

