"""make robustness: a claim's verdicts across bases (spot_utils.tiny.robustness)."""
import pandas as pd
import torch

from spot_utils import claims, experiments
from spot_utils.config import REPO_ROOT
from spot_utils.tiny import robustness


def _verdicts(**by_id):
    return claims.frame([claims.row(i, "Table 1", f"claim {i}", "", d, 1.0) for i, d in by_id.items()])


def test_a_claim_holds_on_every_base_only_when_every_verdict_is_the_same():
    table = robustness.summary({0: _verdicts(A=2.0, B=2.0), 1: _verdicts(A=3.0, B=-2.0), 2: _verdicts(A=5.0, B=0.0)})
    assert table.set_index("id")["on every base"].to_dict() == {"A": "agree on all", "B": "mixed"}
    assert list(table.set_index("id").loc["B", ["base 0", "base 1", "base 2"]]) == ["agree", "disagree", "inconclusive"]


def test_the_summary_lists_the_bases_and_counts_the_claims():
    table = robustness.summary({0: _verdicts(A=2.0, B=2.0), 1: _verdicts(A=3.0, B=-2.0)})
    bases = pd.DataFrame([{"base_seed": 0, "In-domain Avg": 58.2}, {"base_seed": 1, "In-domain Avg": 50.0}])
    text = robustness.markdown(table, bases)
    assert text.startswith("2 bases (seeds 0, 1), one post-training seed each: 1 agree on all, 1 mixed.")
    assert "| A claim A | agree | agree | agree on all |" in text
    assert "| base seed | In-domain Avg |\n|---|---|\n| 0 | 58.2 |" in text  # the bases' own columns, as given


def test_base_seed_0_is_the_profile_itself_and_the_others_have_their_own_runs():
    assert robustness.base_profile("tiny", 0).runs == REPO_ROOT / "runs" / "tiny"
    other = robustness.base_profile("tiny", 2)
    assert other.seed == 2 and other.runs == REPO_ROOT / "runs" / "tiny" / "robustness" / "base2"


def test_one_seed_specs_are_every_table_run_on_the_first_seed():
    profile = robustness.base_profile("tiny", 0)
    specs = robustness.one_seed_specs(profile)
    assert {s.seed for s in specs} == {profile.experiments.seeds[0]}
    assert {s.name for s in specs} == {s.name for s in experiments.table_specs(profile)}


def test_readme_shows_the_robustness_summary_make_robustness_wrote():
    summary = (REPO_ROOT / "results" / "tiny" / "robustness.md").read_text().strip()
    assert summary in (REPO_ROOT / "README.md").read_text()


def test_bases_pretrained_side_by_side_are_those_pretrained_one_by_one(tiny_profile):
    from dataclasses import replace

    from safetensors.torch import load_file

    from spot_utils.modeling import base_dir
    from spot_utils.tiny.pretrain import pretrain_base

    profiles = [replace(tiny_profile, seed=s, run_dir=str(tiny_profile.runs / f"base{s}")) for s in (1, 2)]
    robustness.pretrain_bases(profiles)
    side_by_side = [load_file(base_dir(p) / "model.safetensors") for p in profiles]
    for p, weights in zip(profiles, side_by_side):
        assert pretrain_base(p)["reused"]  # the cache holds them
        pretrain_base(p, force=True)       # one by one, in this process
        again = load_file(base_dir(p) / "model.safetensors")
        assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert not torch.equal(side_by_side[0]["model.embed_tokens.weight"], side_by_side[1]["model.embed_tokens.weight"])
    # a retrained base drops the answers graded for the one it replaces (robustness reuses them otherwise)
    stale = base_dir(profiles[0]) / "eval_rows.csv"
    stale.write_text("id,task\nold,connect4\n")
    pretrain_base(profiles[0], force=True)
    assert not stale.exists()
