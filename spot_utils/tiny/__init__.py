"""The miniature world: the whole paper on 2 CPU cores in minutes (the `tiny` profile, tasks: miniature).

A world small enough to train from scratch on a CPU and rich enough to show every effect in the paper.
It is one user of the library: spot_utils reaches it only through spot_utils.tasks (a profile whose
`tasks` is "miniature" gets a MiniatureTasks) and through a portable model's saved flag (modeling.load_model).

    arithmetic.py       in-domain reasoning: multi-step arithmetic with a chain of thought (the DAPO-Math analog)
    skills.py           instruction following: string skills graded strictly (the IFEval analog)
    choice.py           multiple-choice arithmetic after a chain of thought (the GPQA-Diamond analog)
    sequence.py         continue a number sequence: a rule to find (the Connect4 analog)
    world.py            the task families as seeded streams of examples, test sets, the grader, Table 1's headline
    model.py            the character tokenizer with a chat template and the ~1M-parameter Qwen3
    portable.py         CPU numerics that give the same bits on every x86-64 CPU with AVX2, and their fingerprint
    pretrain.py         the base model's pretraining (cached under runs/<profile>/base/)
    calibration.py      is a base the raw material the paper needs? every target checked against its number
    symbolic_oracle.py  the Oracle: a minimal editor of the student's arithmetic behind the App. F prompts
    tasks.py            MiniatureTasks: the answers the library asks a profile's tasks for
    robustness.py       make robustness: every claim decided on three bases

    from spot_utils.config import load_profile
    from spot_utils.tiny import world
    from spot_utils.tiny.pretrain import pretrain_base
    cfg = load_profile("tiny")
    pretrain_base(cfg)                                # or reuse runs/tiny/base/
    tests = world.test_sets(cfg.world, cfg.seed)
"""
