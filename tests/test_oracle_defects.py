"""Two defects of the paper profile's Oracle step (issue 12):

1. notebook 01's data stamp hashed whole config sections, so a change of max_concurrency, timeout_s,
   batch_size or tensor_parallel_size deleted errors.jsonl and every paid Oracle reply. Now
   pipeline.prepare_data_dir stamps what changes the content, per level, and moves stale files aside.
2. OracleConfig could not pass extra_body (the released script asked Gemini for a thinking budget with
   thought summaries, which Gemini's OpenAI endpoint puts in the content as <thought>...</thought>).
"""
import dataclasses
import json

import pytest

from spot_utils import pipeline
from spot_utils.config import ConfigError, Profile, load_profile
from spot_utils.oracle import END_MARKER, START_MARKER, OpenAIOracle, direct_solve_messages
from spot_utils.oracle_server import start_server

KEY = "test-key-0a1b2c3d4e5f"
# every section of the tiny profile, as committed: nothing here may change them
TINY_HASHES = {"name": "cea20a1e01094dac", "seed": "de7d7744ccd7722e", "run_dir": "1fec597a6751b456",
               "model": "d3b35d88f405e1f9", "world": "b6d7240d5e1c8859", "pretrain": "9b3984d918936f40",
               "generation": "314f90dbe6a31b86", "eval": "a18345bfca881d3b", "rectification": "5cbdfebd2e7aac31",
               # model.portable_numerics re-keyed everything, training.shared_prefix the post-training runs,
               # issue 16's world, tuned betas and 800-example budget everything again
               "training": "d1749d84b1052f89", "experiments": "64115f740abaca10"}
GEMINI_THINKING = {"google": {"thinking_config": {"thinking_budget": 16384, "include_thoughts": True}}}


def wrap(body):
    return f"{START_MARKER}\n{body}\n{END_MARKER}"

# -----------------------------------------------------------------------------
# the config field


def test_tiny_hashes_are_unchanged_and_extra_body_counts_once_set():
    tiny = load_profile("tiny")
    # every section a cache key can hash ("plan" is make plan's assumptions, "tasks" names the profile's
    # world, spot_utils.tasks, "outputs" where figures and tables go: no cache ever reads any of them)
    assert {f.name: tiny.section_hash(f.name) for f in dataclasses.fields(Profile)
            if f.name not in ("source_file", "plan", "tasks", "outputs")} == TINY_HASHES
    assert tiny.rectification.oracle.extra_body == {}
    assert tiny.section_hash("rectification", "generation") == "0e10aec49d29a3bb"  # the old notebook-02 stamp's
    thinking = load_profile("tiny", **{"rectification.oracle.extra_body": {"x": 1}})
    assert thinking.section_hash("rectification") != TINY_HASHES["rectification"]


@pytest.mark.parametrize("name", ["paper_qwen3_8b", "paper_llama31_8b"])
def test_paper_profiles_ask_gemini_for_the_released_thinking_budget(name):
    # the openai client merges extra_body into the request; Gemini reads its options from a key
    # "extra_body" of that request (its OpenAI-compatibility docs), hence the nesting
    assert load_profile(name).rectification.oracle.extra_body == {"extra_body": GEMINI_THINKING}


def test_extra_body_is_validated_and_unknown_keys_still_name_file_and_line(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: x\nrectification:\n  oracle:\n    extra_bdy: {a: 1}\n")
    with pytest.raises(ConfigError, match=r"line 4: unknown key 'rectification.oracle.extra_bdy'.*extra_body") as e:
        load_profile(p)
    assert str(p) in str(e.value)
    for value, line in [("[1, 2]", 4), ("{when: 2024-01-01}", 4), ("{1: a}", 4), ("{a: .nan}", 4)]:
        p.write_text(f"name: x\nrectification:\n  oracle:\n    extra_body: {value}\n")
        with pytest.raises(ConfigError, match=f"{p}, line {line}: 'rectification.oracle.extra_body' must be a "
                                              "mapping of JSON data"):
            load_profile(p)
    p.write_text("name: x\nrectification:\n  oracle:\n    extra_body:\n      a: [1, {b: null, c: 0.5}]\n")
    assert load_profile(p).rectification.oracle.extra_body == {"a": [1, {"b": None, "c": 0.5}]}

# -----------------------------------------------------------------------------
# extra_body over real HTTP


@pytest.mark.parametrize("stream", [True, False])
def test_extra_body_reaches_the_server_in_every_request(tmp_path, stream):
    paper = load_profile("paper").rectification.oracle.extra_body
    cfg = load_profile("tiny", run_dir=str(tmp_path), **{"rectification.oracle.extra_body": paper,
                                                          "rectification.oracle.stream": stream})
    reqs = [{"id": i, "messages": direct_solve_messages(f"Compute: {10 + i}+3", "Answer: ANSWER")} for i in range(3)]
    with pipeline.oracle_endpoint(cfg) as (oracle, server):
        summary = oracle.run(reqs, tmp_path / "r.jsonl", tmp_path / "f.jsonl")
        bodies = server.request_bodies
    assert summary.succeeded == 3 and len(bodies) == 3
    for body in bodies:
        assert body["extra_body"] == GEMINI_THINKING  # the JSON Gemini receives: {"extra_body": {"google": ...}}
        assert body["model"] == "symbolic-oracle" and body["stream"] is stream and body["messages"]
    with pipeline.oracle_endpoint(load_profile("tiny", run_dir=str(tmp_path))) as (oracle, server):
        oracle.complete(reqs[0]["messages"])
        assert set(server.request_bodies[0]) == {"model", "messages", "stream"}  # tiny: nothing extra


def test_extra_body_may_not_replace_what_the_client_sends(monkeypatch):
    monkeypatch.setenv("SPOT_ORACLE_API_KEY", KEY)
    for key in ("model", "messages", "stream"):
        with pytest.raises(ValueError, match=f"extra_body must not set {key}"):
            OpenAIOracle("http://127.0.0.1:9/v1", "m", extra_body={key: "x"})
    with pytest.raises(ValueError, match="must not set temperature"):
        OpenAIOracle("http://127.0.0.1:9/v1", "m", temperature=0.5, extra_body={"temperature": 1.0})

# -----------------------------------------------------------------------------
# thought summaries in the content (include_thoughts on Gemini's OpenAI endpoint)


@pytest.mark.parametrize("stream", [True, False])
def test_thought_summaries_are_never_taken_for_the_answer(monkeypatch, tmp_path, stream):
    monkeypatch.setenv("SPOT_ORACLE_API_KEY", KEY)
    quoting = f"<thought>**Planning** I will write {START_MARKER}, the fix, then {END_MARKER}.</thought>"
    drafting = f"<thought>Draft:\n{wrap('a draft, not the answer')}\n</thought>\n"
    replies = {
        "quoting": quoting + "\n" + wrap("the answer"),
        "two blocks": quoting + drafting + wrap("the answer"),
        "draft only": drafting + "I could not decide.",  # the only marked text is inside a thought
        "cut in a thought": f"<thought>Draft:\n{wrap('a draft')}",  # cut before the thought ended
    }
    srv = start_server(lambda m: replies[m[-1]["content"]], api_key=KEY)
    try:
        with OpenAIOracle(srv.base_url, "symbolic-oracle", stream=stream, backoff_base=0.001) as oracle:
            reqs = [{"id": k, "messages": [{"role": "user", "content": k}]} for k in replies]
            summary = oracle.run(reqs, tmp_path / "r.jsonl", tmp_path / "f.jsonl")
    finally:
        srv.stop()
    done = {r["id"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    failed = {r["id"]: r for r in map(json.loads, (tmp_path / "f.jsonl").read_text().splitlines())}
    assert (summary.succeeded, summary.failed) == (2, 2)
    assert {k: r["response"] for k, r in done.items()} == {"quoting": "the answer", "two blocks": "the answer"}
    thinking = done["two blocks"]["thinking"]
    assert "**Planning**" in thinking and "a draft, not the answer" in thinking
    assert "<thought>" not in done["quoting"]["raw"]
    assert {k: r["reason"] for k, r in failed.items()} == {"draft only": "parse: missing start marker",
                                                           "cut in a thought": "parse: missing start marker"}

# -----------------------------------------------------------------------------
# notebook 01's data dir

ELICITATION = ("errors.jsonl", "correct.jsonl", "truncated.jsonl")
ORACLE = ("oracle_rectified.jsonl", "oracle_rectified.failures.jsonl", "oracle_rectified.jsonl.torn",
          "oracle_direct.jsonl", "oracle_direct.failures.jsonl")
DERIVED = ("pairs_all.jsonl", "pairs_gamma0.6.jsonl", "sft_direct.jsonl")


def tiny(tmp_path, **overrides):
    return load_profile("tiny", run_dir=str(tmp_path), **overrides)


def tiny_on_mkl(tmp_path, **overrides):
    """The tiny profile as the code that wrote old-format stamps ran it: before portable numerics."""
    return tiny(tmp_path, **{"model.portable_numerics": False, **overrides})


def fill(out):
    """Every kind of file notebook 01 writes, each with its own content."""
    for name in ELICITATION + ORACLE + DERIVED:
        (out / name).write_text(f'{{"id": "{name}"}}\n')


def contents(root):
    """Every file under root (stale folders included) -> content; stamp.json is rewritten, so left out."""
    return sorted(f.read_text() for f in root.rglob("*") if f.is_file() and f.name != "stamp.json")


def kept(out):
    return {f.name for f in out.iterdir() if f.is_file() and f.name != "stamp.json"}


def stale_dirs(out):
    return sorted((out / "stale").iterdir()) if (out / "stale").exists() else []


def test_run_settings_keep_every_file(tmp_path):
    out, lines = pipeline.prepare_data_dir(tiny(tmp_path))
    assert lines == [] and (out / "stamp.json").exists()  # a fresh dir: nothing to say
    fill(out)
    before = contents(out)
    for change in [{"rectification.oracle.max_concurrency": 2}, {"rectification.oracle.timeout_s": 5.0},
                   {"rectification.oracle.max_retries": 0}, {"rectification.oracle.stream": False},
                   {"rectification.oracle.api_key_env": "OTHER_KEY"}, {"generation.tensor_parallel_size": 2}]:
        assert pipeline.prepare_data_dir(tiny(tmp_path, **change)) == (out, []), change
    assert kept(out) == set(ELICITATION + ORACLE + DERIVED) and contents(out) == before and not stale_dirs(out)


def test_vllm_batch_size_and_tensor_parallelism_keep_every_file(tmp_path):
    paper = {"run_dir": str(tmp_path)}
    out, _ = pipeline.prepare_data_dir(load_profile("paper", **paper))
    fill(out)
    for change in [{"generation.batch_size": 8}, {"generation.tensor_parallel_size": 4},
                   {"rectification.oracle.max_concurrency": 64, "rectification.oracle.timeout_s": 60.0}]:
        assert pipeline.prepare_data_dir(load_profile("paper", **paper, **change))[1] == [], change
    assert kept(out) == set(ELICITATION + ORACLE + DERIVED)
    # the hf backend seeds each batch, so there the batch size changes the samples
    out, _ = pipeline.prepare_data_dir(tiny(tmp_path / "hf"))
    fill(out)
    lines = pipeline.prepare_data_dir(tiny(tmp_path / "hf", **{"generation.batch_size": 7}))[1]
    assert "generation.batch_size 200 -> 7" in lines[0] and kept(out) == set()


def test_a_new_temperature_moves_the_elicitation_and_the_oracle_replies_aside(tmp_path):
    out, _ = pipeline.prepare_data_dir(tiny(tmp_path))
    fill(out)
    before = contents(out)
    _, lines = pipeline.prepare_data_dir(tiny(tmp_path, **{"generation.temperature": 1.0}))
    (aside,) = stale_dirs(out)
    assert kept(out) == set() and {f.name for f in aside.iterdir()} == set(ELICITATION + ORACLE + DERIVED)
    assert contents(out) == before  # moved, not deleted
    assert len(lines) == 2
    assert lines[0].startswith("the elicitation is stale (generation.temperature 0.7 -> 1.0): moved errors.jsonl")
    assert lines[1].startswith("the Oracle replies are stale (they answer the stale elicitation): moved oracle_")
    assert all(line.endswith(f" to {pipeline.repo_relative(aside)}") for line in lines)
    assert json.loads((out / "stamp.json").read_text())["elicitation"]["generation.temperature"] == 1.0
    assert pipeline.prepare_data_dir(tiny(tmp_path, **{"generation.temperature": 1.0}))[1] == []  # now current


def test_a_new_oracle_model_keeps_the_elicitation(tmp_path):
    out, _ = pipeline.prepare_data_dir(tiny(tmp_path))
    fill(out)
    before = contents(out)
    _, lines = pipeline.prepare_data_dir(tiny(tmp_path, **{"rectification.oracle.model": "gemini-2.5-pro"}))
    (aside,) = stale_dirs(out)
    assert kept(out) == set(ELICITATION)
    assert {f.name for f in aside.iterdir()} == set(ORACLE + DERIVED) and contents(out) == before
    assert lines == [f"the Oracle replies are stale (rectification.oracle.model \"symbolic-oracle\" -> "
                     f"\"gemini-2.5-pro\"): moved {', '.join(sorted(ORACLE) + sorted(DERIVED[:2]) + [DERIVED[2]])} "
                     f"to {pipeline.repo_relative(aside)}"]
    for change in [{"rectification.with_ground_truth": False}, {"rectification.oracle.extra_body": {"a": 1}},
                   {"rectification.oracle.base_url": "http://127.0.0.1:1/v1"}]:
        fill(out)
        lines = pipeline.prepare_data_dir(tiny(tmp_path, **change))[1]
        assert len(lines) == 1 and lines[0].startswith("the Oracle replies are stale") and kept(out) == set(ELICITATION)
    assert len(stale_dirs(out)) == 4 and len(contents(out)) == 4 * len(ORACLE + DERIVED) + len(ELICITATION)


def test_force_and_a_missing_stamp_move_everything_aside(tmp_path):
    out, _ = pipeline.prepare_data_dir(tiny(tmp_path))
    fill(out)
    lines = pipeline.prepare_data_dir(tiny(tmp_path), force=True)[1]
    assert [line.split(":")[0] for line in lines] == ["the elicitation is stale (force=True)",
                                                      "the Oracle replies are stale (force=True)"]
    assert kept(out) == set()
    fill(out)
    (out / "stamp.json").unlink()
    lines = pipeline.prepare_data_dir(tiny(tmp_path))[1]
    assert "(no stamp.json)" in lines[0] and kept(out) == set()
    assert len(stale_dirs(out)) == 2 and len(contents(out)) == 2 * len(ELICITATION + ORACLE + DERIVED)


def old_stamp(cfg):
    """What notebook 01 wrote before prepare_data_dir (its cell 3, verbatim)."""
    from spot_utils.modeling import base_config_hash

    return {"base": base_config_hash(cfg), "rectification": cfg.section_hash("rectification", "generation")}


def test_an_old_format_stamp_that_matches_keeps_the_files_and_is_upgraded(tmp_path):
    out = pipeline.data_dir(tiny_on_mkl(tmp_path))
    fill(out)
    (out / "stamp.json").write_text(json.dumps(old_stamp(tiny_on_mkl(tmp_path))))
    _, lines = pipeline.prepare_data_dir(tiny_on_mkl(tmp_path))
    assert lines == ["stamp.json: upgraded from the old format, which matches this profile; files kept"]
    assert kept(out) == set(ELICITATION + ORACLE + DERIVED)
    assert json.loads((out / "stamp.json").read_text()) == pipeline.data_stamp(tiny_on_mkl(tmp_path))
    assert pipeline.prepare_data_dir(tiny_on_mkl(tmp_path, **{"rectification.oracle.max_concurrency": 3}))[1] == []
    # an old stamp of other settings: which ones it cannot say, so everything is stale
    (out / "stamp.json").write_text(json.dumps(old_stamp(tiny_on_mkl(tmp_path, **{"generation.top_p": 0.9}))))
    lines = pipeline.prepare_data_dir(tiny_on_mkl(tmp_path))[1]
    assert "old-format stamp.json of other settings" in lines[0] and kept(out) == set()


def test_an_old_format_stamp_is_stale_once_the_model_runs_portable(tmp_path):
    # data sampled by an MKL-numerics base is not what the portable base would sample: all of it moves aside
    out = pipeline.data_dir(tiny(tmp_path))
    fill(out)
    (out / "stamp.json").write_text(json.dumps(old_stamp(tiny_on_mkl(tmp_path))))
    _, lines = pipeline.prepare_data_dir(tiny(tmp_path))
    assert lines[0].startswith("stamp.json: upgraded") and lines[1].startswith("the elicitation is stale (base ")
    assert kept(out) == set()


def test_an_old_format_stamp_then_a_new_setting_moves_only_what_it_changes(tmp_path):
    # the paper profile's caches were stamped before extra_body existed: the elicitation (days of GPU
    # time) stays, the Oracle replies, made without the thinking budget, move aside
    out = pipeline.data_dir(tiny_on_mkl(tmp_path))
    fill(out)
    (out / "stamp.json").write_text(json.dumps(old_stamp(tiny_on_mkl(tmp_path))))
    gemini = {"rectification.oracle.extra_body": {"extra_body": GEMINI_THINKING}}
    _, lines = pipeline.prepare_data_dir(tiny_on_mkl(tmp_path, **gemini))
    assert lines[0].startswith("stamp.json: upgraded")
    assert lines[1].startswith('the Oracle replies are stale (rectification.oracle.extra_body {} -> {"extra_body": ')
    assert kept(out) == set(ELICITATION)


def test_stale_folders_never_collide(tmp_path):
    out, _ = pipeline.prepare_data_dir(tiny(tmp_path))
    for _ in range(3):  # within one second
        fill(out)
        pipeline.prepare_data_dir(tiny(tmp_path), force=True)
    assert len(stale_dirs(out)) == 3 and len(contents(out)) == 3 * len(ELICITATION + ORACLE + DERIVED)

# -----------------------------------------------------------------------------
# rectified_pairs (an analysis folder): a stale one is moved aside, not deleted


def test_rectified_pairs_moves_a_stale_folder_aside(tiny_profile, tmp_path):
    from conftest import random_policy_and_questions

    model, tok, questions = random_policy_and_questions(tiny_profile, 3, seed=5)
    tiny_profile.generation.max_new_tokens = 8
    out = tmp_path / "hot"
    path, report = pipeline.rectified_pairs(tiny_profile, model, tok, questions, out, temperature=1.2)
    assert report.startswith("temperature 1.2: ") and "moved" not in report
    replies = '{"id": "a paid reply"}\n'
    (out / "oracle_rectified.jsonl").write_text(replies)
    tiny_profile.rectification.oracle.max_concurrency = 1  # how the run goes: the folder is reused
    assert "reused" in pipeline.rectified_pairs(tiny_profile, model, tok, questions, out, temperature=1.2)[1]
    _, report = pipeline.rectified_pairs(tiny_profile, model, tok, questions[:2], out, temperature=1.2)
    (aside,) = sorted((out / "stale").iterdir())
    assert report.startswith("temperature 1.2: ") and " 2 samples" in report
    assert report.endswith(f"(the earlier files moved to {pipeline.repo_relative(aside)}: questions "
                           f"{json.dumps(json.loads((aside / 'stamp.json').read_text())['questions'])} -> "
                           f"{json.dumps(json.loads((out / 'stamp.json').read_text())['questions'])})")
    assert (aside / "oracle_rectified.jsonl").read_text() == replies and (aside / path.name).exists()
    _, report = pipeline.rectified_pairs(tiny_profile, model, tok, questions[:2], out, temperature=1.2, force=True)
    assert report.endswith(": force=True)") and len(list((out / "stale").iterdir())) == 2
