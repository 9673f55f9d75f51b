"""The data pipeline of Section 2: elicit the policy's errors, rectify them with the Oracle, measure
each edit with the LCS change ratio, and write the data sets every training method consumes.

Files, all under runs/<profile>/data/:
  errors.jsonl, correct.jsonl          the policy's own wrong / right answers (correct.jsonl feeds RFT)
  oracle_rectified.jsonl (+failures)    raw Oracle replies to the App. F prompt (resumable)
  oracle_direct.jsonl (+failures)       the Oracle's own solutions (the SFT baseline's off-policy data)
  pairs_all.jsonl                       every verified rectified pair (gamma = 1.0)
  pairs_gamma{g}.jsonl                  pairs with change ratio <= gamma (SPoT's data)
  sft_direct.jsonl                      question + the Oracle's direct answer
  stamp.json, stale/<UTC time>/         what the files were made with; files moved aside when stale (prepare_data_dir)
"""
from __future__ import annotations

import hashlib
import itertools
import json
import secrets
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .config import Profile, without_new_settings
from .data import DataError, read_jsonl, write_jsonl, write_pairs
from .environment import repo_relative
from .generation import generate, stage_engine
from .modeling import base_config_hash, prompt_text
from .oracle import OpenAIOracle, direct_solve_messages, rectification_messages
from .oracle_server import start_server
from .rectify import change_ratio, common_prefix_length, filter_pairs
from .tasks import load_base, tasks_of


def data_dir(profile: Profile) -> Path:
    path = profile.runs / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- notebook 01's data dir: stamped per level, stale files moved aside (never deleted) ---------
# Two levels, each guarding its files: the elicitation (y- and the RFT answers) and the Oracle's
# replies to it (paid for). What is built from them (pairs, SFT data) is rebuilt by notebook 01.
_ELICITATION_FILES = ("errors.jsonl", "correct.jsonl", "truncated.jsonl")
_ORACLE_FILES = ("oracle_*",)  # replies, their .failures, .torn and .tmp files
_DERIVED_FILES = ("pairs_*.jsonl", "sft_direct.jsonl")


def data_stamp(profile: Profile) -> dict[str, dict]:
    """What the data's content depends on, per level ("elicitation", "oracle"; the Oracle's replies also
    depend on the elicitation). How a run goes (concurrency, timeouts, retries, streaming, the key's
    variable, vLLM's batch size and tensor parallelism) is left out: changing it keeps the files."""
    g, r, o = profile.generation, profile.rectification, profile.rectification.oracle
    elicitation = {"base": base_config_hash(profile), "model.name_or_path": profile.model.name_or_path,
                   "model.enable_thinking": profile.model.enable_thinking, "generation.backend": g.backend,
                   "generation.temperature": g.temperature, "generation.top_p": g.top_p,
                   "generation.max_new_tokens": g.max_new_tokens, "rectification.dataset": r.dataset,
                   "rectification.dataset_config": r.dataset_config, "rectification.questions": r.questions,
                   "rectification.samples_per_question": r.samples_per_question, "seed": profile.seed}
    if g.backend == "hf":  # the hf backend seeds each batch: another batch size draws other samples
        elicitation["generation.batch_size"] = g.batch_size
    oracle = {"rectification.oracle.base_url": o.base_url, "rectification.oracle.model": o.model,
              "rectification.with_ground_truth": r.with_ground_truth,
              "rectification.oracle.symbolic_rewrite_rate": o.symbolic_rewrite_rate,
              "rectification.oracle.extra_body": o.extra_body}
    return json.loads(json.dumps({"elicitation": elicitation, "oracle": oracle}))  # as read back from stamp.json


def prepare_data_dir(profile: Profile, force: bool = False) -> tuple[Path, list[str]]:
    """Notebook 01's data dir, checked against its stamp.json (data_stamp). A level whose settings
    changed (or every level, with force) has its files, and those built on them, moved to
    stale/<UTC time>/ in the data dir. Files without a stamp are stale, except under the stamp the
    code before data_stamp wrote, when that matches this profile (the stamp is then upgraded).
    Returns the data dir and lines to print: what moved where, and why."""
    out = data_dir(profile)
    stamp_path = out / "stamp.json"
    now, lines, unknown = data_stamp(profile), [], None
    then = _read_json(stamp_path)
    if isinstance(then, dict) and set(then) == {"base", "rectification"}:  # written by the code before data_stamp
        old = without_new_settings(profile)
        if then == {"base": base_config_hash(old), "rectification": old.section_hash("rectification", "generation")}:
            then = data_stamp(old)
            lines.append("stamp.json: upgraded from the old format, which matches this profile; files kept")
        else:
            unknown = "an old-format stamp.json of other settings (it does not say which)"
    elif not (isinstance(then, dict) and set(then) == set(now) and all(isinstance(v, dict) for v in then.values())):
        unknown = "stamp.json unreadable" if stamp_path.exists() else "no stamp.json"
    dest, upstream_stale = None, False
    for level, patterns, what in [("elicitation", _ELICITATION_FILES, "the elicitation is"),
                                  ("oracle", _ORACLE_FILES + _DERIVED_FILES, "the Oracle replies are")]:
        why = "force=True" if force else unknown or _changes(then[level], now[level])
        if not why and upstream_stale:
            why = "they answer the stale elicitation"
        upstream_stale = upstream_stale or bool(why)
        files = [f for pat in patterns for f in sorted(out.glob(pat)) if f.is_file()] if why else []
        if files:
            dest = dest or _aside_dir(out)
            for f in files:
                f.rename(dest / f.name)
            lines.append(f"{what} stale ({why}): moved {', '.join(f.name for f in files)} to {repo_relative(dest)}")
    stamp_path.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    return out, lines


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _changes(then: dict, now: dict) -> str:
    """'key old -> new; ...' for every setting that differs, '' when none does."""
    missing = object()
    return "; ".join(f"{k} {json.dumps(then.get(k, '(unset)'))} -> {json.dumps(now.get(k, '(unset)'))}"
                     for k in sorted(set(then) | set(now)) if then.get(k, missing) != now.get(k, missing))


def _aside_dir(folder: Path) -> Path:
    """A new, empty folder stale/<UTC time>/ in `folder` for files moved aside."""
    name = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for i in itertools.count():
        dest = folder / "stale" / (name if i == 0 else f"{name}-{i}")
        try:
            dest.mkdir(parents=True)
            return dest
        except FileExistsError:
            continue


def answer_format(profile: Profile) -> str:
    """The final-answer line the Oracle must end with: the miniature world's or the paper's (its tasks')."""
    return tasks_of(profile).answer_format


def grade_answer(profile: Profile, response: str, ground_truth) -> bool:
    return tasks_of(profile).grade_answer(response, ground_truth)


def elicitation_questions(profile: Profile) -> list[dict]:
    """Fresh in-domain questions: the miniature world's training tiers (never a test question), or the
    paper's DAPO-Math-17k English subset through `datasets` (a clear error when offline). The paper's
    questions are the bare problems: `elicit` asks them with the evaluation's math instruction."""
    return tasks_of(profile).elicitation_questions()


def sampling_policy(profile: Profile):
    """(model, tokenizer) for the stages that sample the base policy (elicitation, notebook 02's hot
    pairs). With the hf backend, the model this process generates with; with vllm only the tokenizer
    (model None): the engine loads the weights itself, and an HF copy already on the GPU would leave
    vLLM too little memory to start."""
    if profile.generation.backend == "hf":
        return load_base(profile)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(profile.model.location)
    tokenizer.padding_side = "left"
    return None, tokenizer


def elicit(profile: Profile, model, tokenizer, questions: list[dict], progress: bool = True,
           temperature: float | None = None, out: Path | None = None) -> dict:
    """Sample the policy on every question, grade each answer, write errors.jsonl and correct.jsonl
    (to `out`, default the profile's data dir; `temperature` overrides the profile's for analyses).
    An answer cut at max_new_tokens has no final answer to grade or to rectify: it goes to
    truncated.jsonl instead (same records), and stats["truncated"] counts it. "accuracy" is over
    all samples (a truncated answer is not correct, as in evaluation)."""
    g, r = profile.generation, profile.rectification
    temperature = g.temperature if temperature is None else temperature
    asked = [tasks_of(profile).prompt(q["question"]) for q in questions]  # the records keep the bare question
    # hf: the model object this process holds; vllm: the weights on disk, in one engine for the stage
    source = model if g.backend == "hf" and model is not None else profile.model.location
    with stage_engine(profile, source) as engine:
        outs, ends = generate(source, asked, backend=g.backend, n=r.samples_per_question, temperature=temperature,
                              top_p=g.top_p, max_new_tokens=g.max_new_tokens, seed=profile.seed,
                              batch_size=g.batch_size, tokenizer=tokenizer, enable_thinking=profile.model.enable_thinking,
                              tensor_parallel_size=g.tensor_parallel_size, progress=progress, desc="elicit",
                              return_finish_reasons=True, engine=engine)
    errors, correct, truncated = [], [], []
    for q, text_q, samples, reasons in zip(questions, asked, outs, ends):
        prompt = prompt_text(tokenizer, text_q, enable_thinking=profile.model.enable_thinking)
        for k, (text, reason) in enumerate(zip(samples, reasons)):
            rec = {"id": f"{q['id']}-s{k}", "question": q["question"], "response": text,
                   "ground_truth": q["ground_truth"], "tier": q["tier"], "prompt": prompt}
            if reason != "stop":  # "length" (or vLLM's "abort"): the model did not end this answer
                truncated.append(rec)
            else:
                (correct if grade_answer(profile, text, q["ground_truth"]) else errors).append(rec)
    out = data_dir(profile) if out is None else Path(out)
    write_jsonl(out / "errors.jsonl", errors)
    write_jsonl(out / "correct.jsonl", correct)
    write_jsonl(out / "truncated.jsonl", truncated)
    samples = len(errors) + len(correct) + len(truncated)
    return {"samples": samples, "errors": len(errors), "correct": len(correct), "truncated": len(truncated),
            "accuracy": len(correct) / max(1, samples)}


@contextmanager
def oracle_endpoint(profile: Profile, faults: dict | None = None):
    """An OpenAIOracle for the profile. With an empty base_url a local OpenAI-compatible server is
    started on a free loopback port, with a fresh random API key, and stopped afterwards: the very
    client code that calls Gemini in the paper profile runs here. It serves the responder of the
    profile's tasks (tasks.local_oracle()): the SymbolicOracle of the miniature, the AnswerLineOracle for
    the paper's tasks (paper_smoke: math questions it answers with the prompt's reference answer, and
    direct solutions from the profile's question set, loaded on the first direct-solve request). The model name is the profile's either way.
    `faults` (local server only) injects rate-limit / server errors so the retry path is exercised.
    The environment is left alone: the local key goes to the client directly, never into the
    variable api_key_env names (which may hold the user's real key)."""
    o = profile.rectification.oracle
    if faults and o.base_url:
        raise ValueError(f"faults are injected by the local Oracle server only; this profile calls {o.base_url}")
    server, key = None, None
    if not o.base_url:
        key = secrets.token_urlsafe(16)
        server = start_server(tasks_of(profile).local_oracle(), model_name=o.model, api_key=key, faults=faults)
    try:
        client = OpenAIOracle(server.base_url if server else o.base_url, o.model, api_key_env=o.api_key_env,
                              max_concurrency=o.max_concurrency, max_retries=o.max_retries, stream=o.stream,
                              timeout=o.timeout_s, extra_body=o.extra_body, api_key=key)
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
    skipped and why). The folder is reused while its stamp (data_stamp's settings, temperature,
    questions) matches; otherwise, or with force, what it holds is first moved to stale/<UTC time>/
    in it (never deleted: Oracle replies are paid for), so no stale Oracle reply is ever resumed."""
    out = Path(out)
    path = out / f"pairs_gamma{profile.rectification.gamma:g}.jsonl"
    asked = {"temperature": temperature, "questions": hashlib.sha256(json.dumps(questions).encode()).hexdigest()[:16]}

    def stamp_of(p):
        levels = data_stamp(p)
        return {**levels["elicitation"], **levels["oracle"], **asked}

    stamp, stamp_path = stamp_of(profile), out / "stamp.json"
    then, old = _read_json(stamp_path), without_new_settings(profile)
    if then == {"base": base_config_hash(old), "settings": old.section_hash("rectification", "generation"), **asked}:
        then = stamp_of(old)  # the stamp of the code before data_stamp, for these very settings
    if not force and path.exists() and then == stamp:
        stamp_path.write_text(json.dumps(stamp))  # upgrades an old-format stamp
        return path, f"{len(read_jsonl(path))} pairs (reused from {repo_relative(out)})"
    moved = ""
    earlier = [f for f in out.iterdir() if f.name != "stale"] if out.is_dir() else []
    if earlier:
        if force or not isinstance(then, dict) or "settings" in then:
            why = "force=True" if force else "no stamp of these settings"
        else:
            why = _changes(then, stamp) or "no pairs file (an interrupted run)"
        dest = _aside_dir(out)
        for f in earlier:
            f.rename(dest / f.name)
        moved = f" (the earlier files moved to {repo_relative(dest)}: {why})"
    out.mkdir(parents=True, exist_ok=True)
    stats = elicit(profile, model, tokenizer, questions, progress=False, temperature=temperature, out=out)
    with oracle_endpoint(profile) as (oracle, _):
        summary = oracle.run(rectification_requests(profile, read_jsonl(out / "errors.jsonl")),
                             out / "oracle_rectified.jsonl", out / "oracle_rectified.failures.jsonl", desc="rectify")
    replies = out / "oracle_rectified.jsonl"  # not written when there was no error to send
    pairs, skipped = build_pairs(profile, tokenizer, oracle_records(replies) if replies.exists() else [])
    kept, _ = filter_pairs(pairs, profile.rectification.gamma)
    write_pairs(path, kept)
    stamp_path.write_text(json.dumps(stamp))
    return path, (f"temperature {temperature}: {stats['errors']} errors in {stats['samples']} samples -> "
                  f"{summary.succeeded} Oracle replies ({summary.failed} failed: {dict(summary.failure_reasons) or 'none'})"
                  f" -> {len(pairs)} verified pairs (skipped: {dict(skipped) or 'none'}) -> {len(kept)} at gamma "
                  f"{profile.rectification.gamma:g}{moved}")


def make_datasets(profile: Profile) -> dict[str, int]:
    """Notebook 01 in one call, for scripts (make robustness): elicit the base policy's answers (reused
    when the data dir's stamp matches), rectify the errors and write direct answers with the profile's
    Oracle (resumed from its reply files), then write the data sets of Tables 1-3. Returns their sizes."""
    out, _ = prepare_data_dir(profile)
    model, tokenizer = sampling_policy(profile)
    if not (out / "errors.jsonl").exists():
        elicit(profile, model, tokenizer, elicitation_questions(profile))
    errors = read_jsonl(out / "errors.jsonl")
    with oracle_endpoint(profile) as (oracle, _):
        oracle.run(rectification_requests(profile, errors), out / "oracle_rectified.jsonl",
                   out / "oracle_rectified.failures.jsonl", desc="rectify")
        oracle.run(direct_requests(profile, errors), out / "oracle_direct.jsonl", out / "oracle_direct.failures.jsonl",
                   desc="direct answers")
    pairs, _ = build_pairs(profile, tokenizer, oracle_records(out / "oracle_rectified.jsonl"))
    return write_datasets(profile, pairs, oracle_records(out / "oracle_direct.jsonl"), profile.rectification.gamma)
