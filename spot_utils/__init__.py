"""spot_utils: the library behind the SPoT notebooks ("Surgical Post-Training", arXiv 2603.01683).

Every computation a notebook shows lives here, so it can be unit-tested and reused on your own model.
The method: rectify (LCS change ratio, the gamma filter), oracle (App. F prompts, the OpenAI-compatible
client) and oracle_server, losses (the objectives), training (every method on one TRL trainer),
generation, modeling (load, save, prompt a policy), paper_suites and suite_eval (the nine benchmarks),
connect4 (the paper's 6x7 engine). Around it: config (profiles), tasks (what differs between a
profile's world and another's), data (JSONL records), pipeline (Sec. 2's data), evaluation,
experiments (the runs of Tables 1-3), plots and tables. The miniature world (tasks, tiny model,
pretraining, symbolic Oracle) is the subpackage spot_utils.tiny: one user of the library.
"""
__version__ = "0.1.0"
