"""The data pipeline of Section 2: elicit the policy's errors, rectify them with the Oracle, measure
each edit with the LCS change ratio, and write the data sets every training method consumes.

Files, all under runs/<profile>/data/:
  errors.jsonl, correct.jsonl          the policy's own wrong / right answers (correct.jsonl feeds RFT)
  oracle_rectified.jsonl (+failures)    raw Oracle replies to the App. F prompt (resumable)
  oracle_direct.jsonl (+failures)       the Oracle's own solutions (the SFT baseline's off-policy data)
  pairs_all.jsonl                       every verified rectified pair (gamma = 1.0)
  pairs_gamma{g}.jsonl                  pairs with change ratio <= gamma (SPoT's data)
  sft_direct.jsonl                      question + the Oracle's direct answer
"""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from . import arithmetic, world
from .config import Profile
from .data import DataError, read_jsonl, write_jsonl, write_pairs
from .environment import repo_relative
from .generation import generate
from .math_grader import grade_math
from .oracle import OpenAIOracle, SymbolicOracle, direct_solve_messages, rectification_messages
from .oracle import DEFAULT_ANSWER_FORMAT
from .oracle_server import start_server
from .pretrain import prompt_text
from .rectify import change_ratio, common_prefix_length


def data_dir(profile: Profile) -> Path:
    path = profile.runs / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def answer_format(profile: Profile) -> str:
    """The final-answer line the Oracle must end with: the miniature world's or the paper's."""
    return arithmetic.ANSWER_FORMAT if profile.is_tiny else DEFAULT_ANSWER_FORMAT


def grade_answer(profile: Profile, response: str, ground_truth) -> bool:
    if profile.is_tiny:
        return arithmetic.grade_arithmetic(response, ground_truth)
    return grade_math(response, str(ground_truth))


def elicitation_questions(profile: Profile) -> list[dict]:
    """Fresh in-domain questions: the miniature world's training tiers (never a test question), or the
    paper's DAPO-Math-17k English subset through `datasets` (a clear error when offline)."""
    r = profile.rectification
    if profile.is_tiny:
        exclude = {ex.question for ex in world.test_sets(profile.world, profile.seed)}
        return [{"id": ex.id, "question": ex.question, "ground_truth": ex.ground_truth, "tier": ex.tier}
                for ex in world.elicitation_set(profile.world, r.questions, profile.seed, exclude)]
    try:
        from datasets import load_dataset

        ds = load_dataset(r.dataset, r.dataset_config or None, split="train")
    except Exception as e:
        raise RuntimeError(f"could not load {r.dataset} ({r.dataset_config}) through `datasets`: {e}. "
                           "The paper profile needs the Hugging Face hub (or a local cache of it).") from e
    ds = ds.shuffle(seed=profile.seed).select(range(min(r.questions, len(ds))))
    return [{"id": f"dapo{i:05d}", "question": row["prompt"], "ground_truth": row["solution"], "tier": "dapo"}
            for i, row in enumerate(ds)]


def elicit(profile: Profile, model, tokenizer, questions: list[dict], progress: bool = True,
           temperature: float | None = None, out: Path | None = None) -> dict:
    """Sample the policy on every question, grade each answer, write errors.jsonl and correct.jsonl
    (to `out`, default the profile's data dir; `temperature` overrides the profile's for analyses)."""
    g, r = profile.generation, profile.rectification
    temperature = g.temperature if temperature is None else temperature
    prompts = [q["question"] for q in questions]
    outs = generate(model if profile.is_tiny else profile.model.name_or_path, prompts, backend=g.backend,
                    n=r.samples_per_question, temperature=temperature, top_p=g.top_p,
                    max_new_tokens=g.max_new_tokens, seed=profile.seed, batch_size=g.batch_size,
                    tokenizer=tokenizer, enable_thinking=profile.model.enable_thinking,
                    tensor_parallel_size=g.tensor_parallel_size, progress=progress, desc="elicit")
    errors, correct = [], []
    for q, samples in zip(questions, outs):
        for k, text in enumerate(samples):
            rec = {"id": f"{q['id']}-s{k}", "question": q["question"], "response": text,
                   "ground_truth": q["ground_truth"], "tier": q["tier"],
                   "prompt": prompt_text(tokenizer, q["question"], enable_thinking=profile.model.enable_thinking)}
            (correct if grade_answer(profile, text, q["ground_truth"]) else errors).append(rec)
    out = data_dir(profile) if out is None else Path(out)
    write_jsonl(out / "errors.jsonl", errors)
    write_jsonl(out / "correct.jsonl", correct)
    return {"samples": len(errors) + len(correct), "errors": len(errors), "correct": len(correct),
            "accuracy": len(correct) / max(1, len(errors) + len(correct))}


@contextmanager
def oracle_endpoint(profile: Profile, faults: dict | None = None):
    """An OpenAIOracle for the profile. With an empty base_url (tiny) a local OpenAI-compatible server
    that serves the SymbolicOracle is started on a free loopback port, with a fresh random API key,
    and stopped afterwards: the very client code that calls Gemini in the paper profile runs here.
    `faults` (local server only) injects rate-limit / server errors so the retry path is exercised.
    The environment is left alone: the local key goes to the client directly, never into the
    variable api_key_env names (which may hold the user's real key)."""
    o = profile.rectification.oracle
    if faults and o.base_url:
        raise ValueError(f"faults are injected by the local Oracle server only; this profile calls {o.base_url}")
    server, key = None, None
    if not o.base_url:
        key = secrets.token_urlsafe(16)
        server = start_server(SymbolicOracle(o.symbolic_rewrite_rate, profile.seed), model_name=o.model,
                              api_key=key, faults=faults)
    try:
        client = OpenAIOracle(server.base_url if server else o.base_url, o.model, api_key_env=o.api_key_env,
                              max_concurrency=o.max_concurrency, max_retries=o.max_retries, stream=o.stream,
                              timeout=o.timeout_s, api_key=key)
    except BaseException:
        if server:
            server.stop()
        raise
    try:
        yield client, server
    finally:
        client.close()
        if server:
            server.stop()


def rectification_requests(profile: Profile, errors: list[dict]) -> list[dict]:
    gt = profile.rectification.with_ground_truth
    return [{"id": e["id"], "messages": rectification_messages(e["question"], e["response"],
                                                               e["ground_truth"] if gt else None,
                                                               answer_format=answer_format(profile)),
             "question": e["question"], "rejected": e["response"], "ground_truth": e["ground_truth"],
             "prompt": e["prompt"], "tier": e["tier"]} for e in errors]


def direct_requests(profile: Profile, errors: list[dict]) -> list[dict]:
    """One direct-solve request per question that has an error (the SFT baseline's questions)."""
    seen, out = set(), []
    for e in errors:
        if e["question"] not in seen:
            seen.add(e["question"])
            out.append({"id": e["id"], "messages": direct_solve_messages(e["question"], answer_format(profile)),
                        "question": e["question"], "ground_truth": e["ground_truth"], "prompt": e["prompt"],
                        "tier": e["tier"]})
    return out


def by_id(records: list[dict]) -> list[dict]:
    """Records in id order. Oracle reply files are in completion order, which concurrency makes vary
    from run to run; everything built from them must not."""
    return sorted(records, key=lambda r: str(r["id"]))


def oracle_records(path: str | Path) -> list[dict]:
    """The Oracle's replies, in id order (see by_id). Strict: a bad line or a repeated id names its
    file and line; rerunning the Oracle step (OpenAIOracle.run) repairs what a crash left."""
    try:
        return by_id(read_jsonl(path, {"id": (str, int)}, unique_ids=True))
    except DataError as e:
        raise DataError(f"{e} (rerun the Oracle step: on resume it moves incomplete lines to {Path(path).name}.torn)") from None


def build_pairs(profile: Profile, tokenizer, records: list[dict]) -> tuple[list[dict], Counter]:
    """Turn Oracle replies into pair records (DESIGN section 5), in id order. A correction whose final
    answer is not verified correct, or that equals y-, is skipped and counted by reason, never
    silently dropped."""
    pairs, skipped = [], Counter()
    for rec in by_id(records):
        chosen, rejected = rec["response"].strip(), rec["rejected"].strip()
        if not grade_answer(profile, chosen, rec["ground_truth"]):
            skipped["correction not verified correct"] += 1
            continue
        if chosen == rejected:
            skipped["correction identical to y-"] += 1
            continue
        yneg = tokenizer.encode(rejected, add_special_tokens=False)
        ypos = tokenizer.encode(chosen, add_special_tokens=False)
        pairs.append({"id": rec["id"], "prompt": rec["prompt"], "question": rec["question"], "rejected": rejected,
                      "chosen": chosen, "ground_truth": rec["ground_truth"], "change_ratio": change_ratio(yneg, ypos),
                      "source": "oracle_rectified", "tier": rec.get("tier", ""),
                      "common_prefix_tokens": common_prefix_length(yneg, ypos),
                      "rejected_tokens": len(yneg), "chosen_tokens": len(ypos)})
    return pairs, skipped


def write_datasets(profile: Profile, pairs: list[dict], direct: list[dict], gamma: float) -> dict[str, int]:
    """Write the data sets of Tables 1-3: pairs at gamma 1.0 and at `gamma`, and the direct answers."""
    from .rectify import filter_pairs

    out = data_dir(profile)
    kept, _ = filter_pairs(pairs, gamma)
    sft = []
    for rec in by_id(direct):
        if grade_answer(profile, rec["response"], rec["ground_truth"]):
            sft.append({"id": rec["id"], "prompt": rec["prompt"], "question": rec["question"],
                        "response": rec["response"].strip(), "ground_truth": rec["ground_truth"],
                        "source": "oracle_direct", "tier": rec.get("tier", "")})
    return {"pairs_all.jsonl": write_pairs(out / "pairs_all.jsonl", pairs),
            f"pairs_gamma{gamma:g}.jsonl": write_pairs(out / f"pairs_gamma{gamma:g}.jsonl", kept),
            "sft_direct.jsonl": write_jsonl(out / "sft_direct.jsonl", sft),
            "correct.jsonl": len(read_jsonl(out / "correct.jsonl"))}


def rectified_pairs(profile: Profile, model, tokenizer, questions: list[dict], out: Path,
                    temperature: float | None = None, force: bool = False) -> tuple[Path, str]:
    """The whole pipeline of Section 2 in one call, into `out` (an analysis folder, never the main
    data dir): elicit at `temperature`, rectify the errors with the profile's Oracle, keep the
    verified pairs at gamma. Returns the pair file and a one-line report (counts of what was
    skipped and why). The folder is reused while its stamp (base, settings, questions) matches;
    otherwise, or with force, it is emptied first, so no stale Oracle reply is ever resumed."""
    from .pretrain import base_config_hash
    from .rectify import filter_pairs

    out = Path(out)
    path = out / f"pairs_gamma{profile.rectification.gamma:g}.jsonl"
    stamp = {"base": base_config_hash(profile), "settings": profile.section_hash("rectification", "generation"),
             "temperature": temperature, "questions": hashlib.sha256(json.dumps(questions).encode()).hexdigest()[:16]}
    stamp_path = out / "stamp.json"
    if not force and path.exists() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return path, f"{len(read_jsonl(path))} pairs (reused from {repo_relative(out)})"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stats = elicit(profile, model, tokenizer, questions, progress=False, temperature=temperature, out=out)
    with oracle_endpoint(profile) as (oracle, _):
        summary = oracle.run(rectification_requests(profile, read_jsonl(out / "errors.jsonl")),
                             out / "oracle_rectified.jsonl", out / "oracle_rectified.failures.jsonl", desc="rectify")
    pairs, skipped = build_pairs(profile, tokenizer, oracle_records(out / "oracle_rectified.jsonl"))
    kept, _ = filter_pairs(pairs, profile.rectification.gamma)
    write_pairs(path, kept)
    stamp_path.write_text(json.dumps(stamp))
    return path, (f"temperature {temperature}: {stats['errors']} errors in {stats['samples']} samples -> "
                  f"{summary.succeeded} Oracle replies ({summary.failed} failed: {dict(summary.failure_reasons) or 'none'})"
                  f" -> {len(pairs)} verified pairs (skipped: {dict(skipped) or 'none'}) -> {len(kept)} at gamma "
                  f"{profile.rectification.gamma:g}")
