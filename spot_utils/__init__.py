"""spot_utils: the library behind the SPoT notebooks ("Surgical Post-Training", arXiv 2603.01683).

Every computation a notebook shows lives here, so it can be unit-tested and reused on your own model:
config (profiles), world/arithmetic/skills/connect4 (the miniature world), modeling (tokenizer and
Qwen3 model), pretrain (the tiny base), generation, evaluation, oracle (rectification), rectify
(LCS change ratio), losses (the objectives), training (every method on one TRL trainer), data (JSONL
records), plots.
"""
__version__ = "0.1.0"
