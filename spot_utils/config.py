"""Profiles: one YAML file per profile in configs/, loaded into typed dataclasses.

A profile fixes everything a run depends on (model, miniature world, pretraining, generation,
evaluation, post-training). Unknown keys and bad values fail loudly with the file, the line, the key and what is
allowed, because a silently ignored typo in a config is a silently different experiment.

    >>> cfg = load_profile("tiny")
    >>> cfg.pretrain.steps
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
# Short names users type; each maps to a file in configs/.
PROFILE_ALIASES = {"paper": "paper_qwen3_8b"}
# Post-training methods of Tables 1-3 (spot_utils.training trains each; the lr is set per method).
METHODS = ("sft", "rft", "sft_plus", "dpo", "reward_sft", "dft", "spot_bce", "spot_bco")
PRETRAIN_FAMILIES = ("arithmetic", "skills", "choice", "sequence", "connect4")  # the miniature's task families (pretrain.mix)
METHOD_LABELS = {"sft": "SFT", "rft": "RFT", "sft_plus": "SFT+", "dft": "DFT", "dpo": "DPO",
                 "reward_sft": "Reward-SFT", "spot_bce": "SPoT-BCE", "spot_bco": "SPoT-BCO"}  # as the paper names them
DELTA_MODES = ("cumulative", "ema")  # = losses.RUNNING_MODES (not imported: config stays light)
# What a profile's runs are about (spot_utils.tasks.FAMILIES): the paper's benchmarks and a hub model, or
# the miniature world (spot_utils.tiny) with a model built and pretrained here.
TASK_FAMILIES = ("miniature", "paper")


def local_or_hub(value: str) -> str:
    """A profile's model or data set: "./dir" (or "../dir") is a path relative to the repository root,
    whatever the working directory (notebooks run in notebooks/); anything else is a hub id or an
    absolute path, passed on as it is."""
    return str((REPO_ROOT / value).resolve()) if value.startswith(("./", "../")) else value


class ConfigError(ValueError):
    """A profile file has an unknown key or a bad value."""


@dataclass
class ModelConfig:
    source: str = "scratch"          # scratch: build the tiny Qwen3 here (tasks: miniature); pretrained: load name_or_path
    name_or_path: str = ""           # hub id or local dir (pretrained only)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0      # short sequences: a small base keeps every RoPE frequency useful
    dtype: str = "float32"
    enable_thinking: bool = False    # Qwen3: False = non-thinking mode (an empty think block)
    # pretrained only. auto: FlashAttention-2 when flash_attn is installed and a GPU is visible (the
    # paper's), else PyTorch SDPA; the scratch model keeps transformers' default
    attn_implementation: str = "auto"
    # matrix products on OpenBLAS's Haswell kernels instead of MKL (spot_utils.tiny.portable): the same bits on
    # every x86-64 CPU with AVX2, Intel or AMD. float32 on CPU only (the tiny profile)
    portable_numerics: bool = False

    @property
    def location(self) -> str:
        """name_or_path as from_pretrained takes it (see local_or_hub)."""
        return local_or_hub(self.name_or_path)

    _choices = {"source": ("scratch", "pretrained"), "dtype": ("float32", "bfloat16", "float16"),
                "attn_implementation": ("auto", "flash_attention_2", "sdpa", "eager")}
    _hash_when_set = ("attn_implementation", "portable_numerics")
    _positive = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                 "max_position_embeddings", "rope_theta")


@dataclass
class WorldConfig:
    """The miniature world (tiny profile): which tasks exist and how hard they are."""
    arith_train_steps: list[int] = field(default_factory=lambda: [2, 3, 4])
    arith_test_steps: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    arith_max_value: int = 99        # every intermediate value stays in [0, arith_max_value]
    arith_max_operand: int = 20      # largest operand of + and - (* takes a single digit)
    step_styles: list[str] = field(default_factory=lambda: ["compact"])  # phrasings of a step line (arithmetic.STYLES)
    skills: list[str] = field(default_factory=lambda: ["reverse", "upper", "shift", "double"])
    skill_chain: list[int] = field(default_factory=lambda: [1, 1])  # instructions per prompt: [min, max]
    skill_word_len: list[int] = field(default_factory=lambda: [3, 8])
    test_size_per_tier: int = 100    # held-out questions per arithmetic tier / instruction count
    choice_test_size: int = 0        # multiple-choice arithmetic (the GPQA analog; 0 = not in the world)
    choice_spread: int = 10          # wrong options lie within this distance of the right value
    sequence_test_size: int = 0      # sequence continuation (the Connect4 analog; 0 = not in the world)
    connect4_test_size: int = 200    # Connect4 winning moves on a compact board (0 = not in the world)
    connect4_max_no_win_fraction: float = 0.2

    _positive = ("arith_max_value", "arith_max_operand", "test_size_per_tier", "choice_spread")
    _non_negative = ("choice_test_size", "sequence_test_size", "connect4_test_size")
    _unit = ("connect4_max_no_win_fraction",)


@dataclass
class PretrainConfig:
    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mix: dict[str, float] = field(default_factory=lambda: {"arithmetic": 0.5, "skills": 0.42, "connect4": 0.08})
    # A skills-heavy start: the copy mechanism the skills need forms in a sudden phase transition whose
    # timing varies a lot between runs; front-loading the skills makes it happen early and reliably.
    curriculum_steps: int = 250
    curriculum_mix: dict[str, float] = field(default_factory=lambda: {"arithmetic": 0.2, "skills": 0.8})
    log_every: int = 25
    probe_every: int = 100           # greedy accuracy on a small validation probe (0 = off)
    probe_size: int = 24             # per tier / skill
    threads: int = 2                 # torch's threads per operation (their count changes reductions' bits)
    family_threads: int = 1          # family micro-batches of a step computed at once, each on one thread
                                     # (0: one per core); the same bits at any count, so never hashed

    _positive = ("steps", "batch_size", "lr", "log_every", "threads", "grad_clip", "probe_size")
    _non_negative = ("warmup_steps", "weight_decay", "curriculum_steps", "probe_every", "family_threads")
    _unit = ("min_lr_ratio",)
    _never_hashed = ("family_threads",)


@dataclass
class GenerationConfig:
    backend: str = "hf"
    temperature: float = 0.7         # paper App. C, for data and evaluation
    top_p: float = 0.8
    max_new_tokens: int = 96
    batch_size: int = 128
    tensor_parallel_size: int = 1    # vllm only
    gpu_memory_utilization: float = 0.9   # vllm only: the share of each GPU its engine may take
    max_model_len: int = 0           # vllm only: prompt + answer tokens the KV cache holds (0: the model's context)

    _choices = {"backend": ("hf", "vllm")}
    _positive = ("max_new_tokens", "batch_size", "tensor_parallel_size")
    _non_negative = ("max_model_len",)
    _unit = ("gpu_memory_utilization",)
    _hash_when_set = ("max_model_len",)            # added after the tiny outputs were committed
    _never_hashed = ("gpu_memory_utilization",)    # how much memory, not what is sampled


@dataclass
class EvalConfig:
    n_samples: int = 1               # avg@n
    # paper profiles: a folder of local suite files (<suite>.jsonl/.json/.parquet in the hub's format,
    # relative to the repository root) read instead of the hub; empty: the hub (or its cache)
    suite_dir: str = ""
    _positive = ("n_samples",)
    _hash_when_set = ("suite_dir",)


@dataclass
class OracleConfig:
    """Any OpenAI-compatible chat-completions endpoint; an empty base_url starts the local symbolic
    Oracle server (tiny). The key is read from the environment variable named here, never stored."""
    base_url: str = ""
    model: str = "symbolic-oracle"
    api_key_env: str = "SPOT_ORACLE_API_KEY"
    max_concurrency: int = 8
    max_retries: int = 5
    stream: bool = True
    timeout_s: float = 600.0
    # tiny only: share of requests the symbolic Oracle answers with a full rewrite, as LLM Oracles
    # sometimes do instead of a minimal edit (see SymbolicOracle); gamma filters those pairs.
    symbolic_rewrite_rate: float = 0.0
    # JSON merged into every request body (the openai client's extra_body=), for provider options
    # such as Gemini's thinking budget; free-form, sent as written
    extra_body: dict[str, Any] = field(default_factory=dict)

    _positive = ("max_concurrency", "timeout_s")
    _non_negative = ("max_retries",)
    _unit = ("symbolic_rewrite_rate",)
    _hash_when_set = ("extra_body",)


@dataclass
class RectificationConfig:
    """Section 2 of the paper: elicit the policy's errors and let the Oracle rectify them."""
    dataset: str = ""                # paper: hub id of the question set (empty: the miniature world)
    dataset_config: str = ""
    questions: int = 4000            # fresh in-domain questions sampled for elicitation
    samples_per_question: int = 1
    with_ground_truth: bool = True   # which App. F prompt: with or without the reference answer
    gamma: float = 0.6               # keep pairs with LCS change ratio <= gamma (Eq. 1)
    oracle: OracleConfig = field(default_factory=OracleConfig)

    @property
    def dataset_location(self) -> str:
        """dataset as datasets.load_dataset takes it (see local_or_hub)."""
        return local_or_hub(self.dataset)

    _positive = ("questions", "samples_per_question")
    _unit = ("gamma",)


def _paper_lr() -> dict[str, float]:
    # Qwen3-8B (App. C): SPoT 1e-6, SFT/RFT/SFT+ 5e-6. The paper gives no lr for DPO, Reward-SFT and
    # DFT; they take SPoT's (pair losses) and SFT's (token-level losses): same data, same budget.
    pair, token = 1e-6, 5e-6
    return {"sft": token, "rft": token, "sft_plus": token, "dft": token,
            "dpo": pair, "reward_sft": pair, "spot_bce": pair, "spot_bco": pair}


@dataclass
class TrainingConfig:
    """Post-training (Sec. 5.1, App. C). Defaults are the paper's Qwen3-8B setting; the global batch is
    per_device_batch_size x gradient_accumulation_steps x processes (2 x 2 x 8 = 32 in the paper)."""
    beta: float = 0.1                # implicit-reward scale of Eq. 3
    # per-method beta where it was tuned (make tune: the miniature's pair methods); a method not named takes `beta`
    beta_by_method: dict[str, float] = field(default_factory=dict)
    epochs: float = 2.0
    max_steps: int = 0               # > 0 overrides epochs
    per_device_batch_size: int = 2   # pairs (or examples) per process per micro-batch
    gradient_accumulation_steps: int = 2
    lr: dict[str, float] = field(default_factory=_paper_lr)  # one entry per method in METHODS
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0       # not in the paper: TRL's / transformers' default
    max_length: int = 8192           # prompt + response tokens; longer sequences are truncated at the end
    bf16: bool = True
    gradient_checkpointing: bool = True
    length_group_rows: int = 0       # > 0: a micro-batch runs as forwards of this many similar-length rows (less padding)
    shared_prefix: bool = True       # pair methods: one packed row per pair, prompt + common prefix once (shared_prefix.py)
    delta_mode: str = "cumulative"   # SPoT-BCO delta: TRL 0.20's running mean (released code) or "ema" (paper text)
    delta_momentum: float = 0.9      # ema only
    logging_steps: int = 10
    save_steps: int = 0              # checkpoint every N optimizer steps (0: only the final model)
    # checkpoints kept while a run trains (0: all): an 8B ZeRO-2 checkpoint (weights + Adam states) is ~100 GB
    save_total_limit: int = 2
    # transformers' full determinism (deterministic kernels, everything seeded): bit-reproducible runs, as the
    # tiny profile needs; on GPUs it costs speed, and the paper profiles turn it off
    full_determinism: bool = True
    # the global batch a launch must make, processes x per_device_batch_size x gradient_accumulation_steps
    # (training.check_launch; the paper's 32); 0: not checked (the tiny profile trains in one process)
    global_batch: int = 32
    deepspeed: str = ""              # DeepSpeed JSON, relative to the repository root (paper profiles)

    _choices = {"lr_scheduler": ("cosine", "linear", "constant_with_warmup"), "delta_mode": DELTA_MODES}
    _positive = ("beta", "epochs", "per_device_batch_size", "gradient_accumulation_steps", "max_length",
                 "logging_steps")
    _non_negative = ("save_total_limit", "global_batch")
    _hash_when_set = ("full_determinism", "beta_by_method")  # added after the tiny outputs were committed
    _never_hashed = ("save_total_limit", "global_batch")  # what is kept on disk and a launch check: nothing computed

    def beta_of(self, method: str) -> float:
        """The implicit-reward scale a method trains with: its tuned value, or the common `beta`."""
        return self.beta_by_method.get(method, self.beta)


@dataclass
class ExperimentsConfig:
    """The runs of notebooks 02 and 03 (spot_utils.experiments): seeds, parallel workers, the probe."""
    seeds: list[int] = field(default_factory=lambda: [0])  # the key comparisons run once per seed
    workers: int = 0                 # parallel single-thread training processes of a tiny grid (0: one per core)
    probe_every: int = 0             # greedy validation probe every N optimizer steps (0: off); Fig. 2
    probe_size: int = 16             # probe examples per arithmetic tier and per skill
    probe_methods: list[str] = field(default_factory=list)  # the methods probed (the probe costs time)
    # every method's training set is capped to this many examples (0: the whole rectified pair set);
    # the paper: 4,000 pairs for Qwen3-8B, 1,500 for Llama-3.1-8B (its number of correct answers, for RFT)
    train_examples: int = 0
    # Fig. 2 once more with every method at this one learning rate (0: off), beside the tuned rates:
    # forgetting shows where the rates are high enough to differ (notebook 02)
    common_lr: float = 0.0
    # how a run of a pretrained-model profile is launched from the notebooks: a command line that
    # experiments.launch_run completes with `-m spot_utils.experiments ...`; {processes} = the paper's batch
    # of 32 / (per-device batch x accumulation). Empty: the notebooks print the command and stop.
    launcher: str = ""
    _positive = ("probe_size",)
    _non_negative = ("workers", "probe_every", "train_examples", "common_lr")
    _hash_when_set = ("train_examples",)  # added after the tiny outputs were committed: 0 keeps their hashes
    # how many processes, how they start, and which extra runs exist (a run's own lr is in its key): nothing computed
    _never_hashed = ("workers", "launcher", "common_lr")


@dataclass
class PlanConfig:
    """The assumptions behind `make plan` (spot_utils.plan): what a pretrained-model profile will cost
    before anything runs. Estimates, stated so a user can replace them with their own hardware's and
    provider's numbers; the paper's one measured cost is its 28 minutes on 8x H800 for 4k pairs."""
    train_minutes_per_4k_pairs: float = 28.0   # one run of 2 epochs on 4,000 pairs, on train_gpus GPUs (Sec. 5.1)
    train_gpus: int = 8
    answer_tokens: int = 3000                  # mean length of a sampled answer (elicitation and math suites)
    short_answer_tokens: int = 600             # mean answer length on IFEval, GPQA-D and Connect4
    tokens_per_gpu_second: float = 2500.0      # vLLM decoding throughput of one GPU for an 8B model, batched
    engine_start_minutes: float = 3.0          # loading an 8B model into vLLM, per engine
    correct_rate: float = 0.6                  # the base's share of correct samples (the rest go to the Oracle)
    oracle_input_tokens: int = 4000            # per request: App. F prompt + question + y- (+ reference)
    oracle_output_tokens: int = 8000           # per request: the answer plus thinking (budget 16,384)
    oracle_usd_per_m_input: float = 1.25       # Gemini 2.5 Pro list prices, USD per million tokens
    oracle_usd_per_m_output: float = 10.0
    oracle_seconds_per_request: float = 90.0   # latency of one streamed reply (max_concurrency run at once)
    model_gb: float = 16.4                     # one saved 8B model in bf16
    optimizer_gb_per_checkpoint: float = 96.0  # AdamW state in float32 (ZeRO-2 shards it across GPUs, saves it all)
    suite_questions: dict[str, int] = field(default_factory=lambda: {
        "aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675,
        "gpqa_diamond": 198, "ifeval": 541, "connect4": 500})   # released sizes; Connect4's is an assumption
    _positive = ("train_minutes_per_4k_pairs", "train_gpus", "answer_tokens", "short_answer_tokens",
                 "tokens_per_gpu_second", "oracle_seconds_per_request")
    _unit = ("correct_rate",)


@dataclass
class Profile:
    name: str
    seed: int = 0
    run_dir: str = ""                # default runs/<name>
    tasks: str = "miniature"         # one of TASK_FAMILIES: which world the runs are in (spot_utils.tasks)
    outputs: str = "runs"            # figures and tables: "repo" (figures/, results/<name>/: committed, in the
                                     # README, checked by nbval) or "runs" (runs/<name>/figures, .../results)
    model: ModelConfig = field(default_factory=ModelConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rectification: RectificationConfig = field(default_factory=RectificationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    experiments: ExperimentsConfig = field(default_factory=ExperimentsConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)   # make plan's assumptions (never hashed: it runs nothing)
    source_file: str = ""            # set by the loader, not read from YAML

    _choices = {"tasks": TASK_FAMILIES, "outputs": ("repo", "runs")}

    @property
    def is_tiny(self) -> bool:
        """The miniature world's profile (for the notebooks' prose; the library asks spot_utils.tasks)."""
        return self.tasks == "miniature"

    @property
    def runs(self) -> Path:
        """Where this profile's artifacts live (git-ignored)."""
        path = Path(self.run_dir) if self.run_dir else Path("runs") / self.name
        return path if path.is_absolute() else REPO_ROOT / path

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of some sections, used to decide whether a cached artifact is stale."""
        data = {s: _hashable(getattr(self, s)) for s in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_NOT_FROM_YAML = {"source_file"}


def _hashable(value: Any) -> Any:
    """A config value as plain data for section_hash. A field named in its class's `_hash_when_set`
    (a setting added after outputs were committed) is left out while it has its default value, so
    adding a knob does not make every cached base model and run stale; setting it does."""
    if not dataclasses.is_dataclass(value):
        return value
    out = {}
    skip = getattr(value, "_hash_when_set", ())
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if (f.name in skip and v == _field_default(f)) or f.name in getattr(value, "_never_hashed", ()):
            continue
        out[f.name] = _hashable(v)
    return out


def without_new_settings(obj):
    """A copy of a config with every `_hash_when_set` field at its default: the settings as the code
    from before those fields saw them (old stamps and hashes are recomputed from this)."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in getattr(obj, "_hash_when_set", ()):
            changes[f.name] = _field_default(f)
        elif dataclasses.is_dataclass(value):
            changes[f.name] = without_new_settings(value)
    return dataclasses.replace(obj, **changes)


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def profile_path(name_or_path: str | Path) -> Path:
    """Resolve 'tiny', 'paper', 'paper_llama31_8b' or a path to a YAML file (.yaml/.yml, any case)."""
    p = Path(name_or_path)
    if p.suffix.lower() in (".yaml", ".yml"):
        if not p.exists():
            raise FileNotFoundError(f"profile file not found: {p}")
        return p
    name = PROFILE_ALIASES.get(str(name_or_path), str(name_or_path))
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")) + sorted(PROFILE_ALIASES)
        raise ConfigError(f"unknown profile '{name_or_path}'; known profiles: {', '.join(known)} "
                          "(or a path to a .yaml file)")
    return path


def load_profile(name_or_path: str | Path = "tiny", **overrides: Any) -> Profile:
    """Load and validate a profile. `overrides` use dotted keys: load_profile("tiny", **{"pretrain.steps": 10});
    an error about an overridden key names the override, not a line of the file."""
    path = profile_path(name_or_path)
    text = _read_text(path)
    try:
        lines = _key_lines(yaml.compose(text), path)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    for dotted, value in overrides.items():
        where = f"{path} (override {dotted}={value!r})"
        _set_dotted(data, dotted.split("."), value, where)
        lines[dotted] = f"override {dotted}={value!r}"
    profile = _build(Profile, data, path, lines, prefix="")
    profile.source_file = str(path)
    return profile


def _read_text(path: Path) -> str:
    """The file as UTF-8 whatever the locale (a BOM is fine); an undecodable byte names its line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not valid UTF-8 (byte {raw[e.start]:#04x})") from None


def _build(cls, data: dict, path: Path, lines: dict, prefix: str):
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in _NOT_FROM_YAML]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        where = _where(path, lines, prefix + str(key))
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'; allowed keys here: {', '.join(allowed)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{prefix}{key}' must be a mapping (section), got {value!r}")
            kwargs[key] = _build(hint, value, path, lines, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(value, hint, where, prefix + key)
    if cls is Profile and "name" not in kwargs:
        raise ConfigError(f"{path}: missing required key 'name'")
    obj = cls(**kwargs)
    _check_values(obj, path, lines, prefix)
    return obj


def _check_type(value: Any, hint: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    ok: bool
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):  # YAML's .nan / .inf: no setting here means "unbounded"
            raise ConfigError(f"{where}: '{key}' must be a finite number, got {value!r}")
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is list:
        (item,) = typing.get_args(hint)
        ok = isinstance(value, list)
        if ok:
            value = [_check_type(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
    elif hint == dict[str, Any]:  # free-form (OracleConfig.extra_body): anything JSON can carry
        if not _is_json_object(value):
            raise ConfigError(f"{where}: '{key}' must be a mapping of JSON data (string keys; strings, finite "
                              f"numbers, booleans, null, lists, mappings), got {value!r}")
        ok = True
    elif origin is dict:
        _, item = typing.get_args(hint)
        ok = isinstance(value, dict)
        if ok:
            value = {k: _check_type(v, item, where, f"{key}.{k}") for k, v in value.items()}
    else:  # pragma: no cover - a new field type needs a branch here
        raise TypeError(f"unsupported config type {hint} for {key}")
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{where}: '{key}' must be of type {name}, got {value!r}")
    return value


def _is_json_object(value: Any) -> bool:
    """A mapping that json.dumps writes as given (YAML also reads dates, which JSON has not)."""
    def ok(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and ok(x) for k, x in v.items())
        if isinstance(v, list):
            return all(map(ok, v))
        if isinstance(v, float):
            return math.isfinite(v)
        return v is None or isinstance(v, (str, int, bool))
    return isinstance(value, dict) and ok(value)


def _check_values(obj, path: Path, lines: dict, prefix: str) -> None:
    for key, choices in getattr(obj, "_choices", {}).items():
        value = getattr(obj, key)
        if value not in choices:
            raise ConfigError(f"{_where(path, lines, prefix + key)}: '{prefix}{key}' is {value!r}; "
                              f"allowed: {', '.join(map(str, choices))}")
    for key in getattr(obj, "_positive", ()):
        value = getattr(obj, key)
        if value <= 0:
            raise ConfigError(f"{_where(path, lines, prefix + key)}: '{prefix}{key}' must be > 0, got {value!r}")
    for key in getattr(obj, "_non_negative", ()):
        value = getattr(obj, key)
        if value < 0:
            raise ConfigError(f"{_where(path, lines, prefix + key)}: '{prefix}{key}' must be >= 0, got {value!r}")
    for key in getattr(obj, "_unit", ()):
        value = getattr(obj, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{_where(path, lines, prefix + key)}: '{prefix}{key}' must be in [0, 1], got {value!r}")
    if isinstance(obj, GenerationConfig):
        if not 0.0 <= obj.temperature <= 2.0:
            raise ConfigError(f"{_where(path, lines, prefix + 'temperature')}: temperature must be in [0, 2]")
        if not 0.0 < obj.top_p <= 1.0:
            raise ConfigError(f"{_where(path, lines, prefix + 'top_p')}: top_p must be in (0, 1]")
    if isinstance(obj, WorldConfig):
        from .tiny.arithmetic import STYLES  # only a profile with a world section: config stays free of the miniature
        from .tiny.skills import SKILLS

        for skill in obj.skills:
            if skill not in SKILLS:
                raise ConfigError(f"{_where(path, lines, prefix + 'skills')}: unknown skill {skill!r}; "
                                  f"allowed: {', '.join(SKILLS)}")
        if not obj.step_styles or set(obj.step_styles) - set(STYLES):
            raise ConfigError(f"{_where(path, lines, prefix + 'step_styles')}: needs one or more of "
                              f"{', '.join(STYLES)}, got {obj.step_styles}")
        lo, hi = (obj.skill_chain + [0, 0])[:2]
        if len(obj.skill_chain) != 2 or not 1 <= lo <= hi <= len(obj.skills):
            raise ConfigError(f"{_where(path, lines, prefix + 'skill_chain')}: must be [min, max] with "
                              f"1 <= min <= max <= {len(obj.skills)} (the number of skills), got {obj.skill_chain}")
        lo, hi = (obj.skill_word_len + [0, 0])[:2]
        if len(obj.skill_word_len) != 2 or not 1 <= lo <= hi:
            raise ConfigError(f"{_where(path, lines, prefix + 'skill_word_len')}: must be [min, max] with 1 <= min <= max")
        for key in ("arith_train_steps", "arith_test_steps"):
            if not getattr(obj, key) or min(getattr(obj, key)) < 1:
                raise ConfigError(f"{_where(path, lines, prefix + key)}: '{prefix}{key}' needs step counts >= 1, "
                                  f"got {getattr(obj, key)}")
        if obj.arith_max_value < 10:  # questions start from a two-digit number (tiny.arithmetic.random_problem)
            raise ConfigError(f"{_where(path, lines, prefix + 'arith_max_value')}: '{prefix}arith_max_value' must be "
                              f">= 10, got {obj.arith_max_value}")
        _check_feasible(obj, obj.arith_test_steps, obj.test_size_per_tier, prefix + "test_size_per_tier", path, lines)
    if isinstance(obj, TrainingConfig):
        _check_training(obj, path, lines, prefix)
    if isinstance(obj, ModelConfig) and obj.portable_numerics and (obj.source, obj.dtype) != ("scratch", "float32"):
        raise ConfigError(f"{_where(path, lines, prefix + 'portable_numerics')}: '{prefix}portable_numerics' is for the "
                          f"float32 model built here (source: scratch, dtype: float32), got source: {obj.source}, "
                          f"dtype: {obj.dtype}")
    if isinstance(obj, ExperimentsConfig) and set(obj.probe_methods) - set(METHODS):
        raise ConfigError(f"{_where(path, lines, prefix + 'probe_methods')}: unknown method(s) "
                          f"{sorted(set(obj.probe_methods) - set(METHODS))}; allowed: {', '.join(METHODS)}")
    if isinstance(obj, ExperimentsConfig) and (not obj.seeds or obj.probe_every < 0):
        raise ConfigError(f"{_where(path, lines, prefix + 'seeds')}: experiments need at least one seed "
                          f"and probe_every >= 0 (got seeds={obj.seeds}, probe_every={obj.probe_every})")
    if isinstance(obj, PretrainConfig):
        for key in ("mix", "curriculum_mix"):
            mix = getattr(obj, key)
            bad = set(mix) - set(PRETRAIN_FAMILIES)
            if bad or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
                raise ConfigError(f"{_where(path, lines, prefix + key)}: {key} needs non-negative weights for "
                                  f"{', '.join(PRETRAIN_FAMILIES)} (got {mix})")
        if obj.curriculum_steps > obj.steps:
            raise ConfigError(f"{_where(path, lines, prefix + 'curriculum_steps')}: '{prefix}curriculum_steps' must be in "
                              f"[0, steps={obj.steps}], got {obj.curriculum_steps}")
    if isinstance(obj, Profile):
        _check_profile_feasible(obj, path, lines)


def _check_training(obj: TrainingConfig, path: Path, lines: dict, prefix: str) -> None:
    def fail(key, msg):
        raise ConfigError(f"{_where(path, lines, prefix + key)}: '{prefix}{key}' {msg}")

    unknown = sorted(set(obj.lr) - set(METHODS))
    if unknown:
        fail("lr", f"has unknown method(s) {', '.join(unknown)}; allowed: {', '.join(METHODS)}")
    missing = [m for m in METHODS if m not in obj.lr]
    if missing:
        fail("lr", f"needs a learning rate for every method; missing: {', '.join(missing)}")
    for method, lr in obj.lr.items():
        if lr <= 0:
            fail("lr", f"must be > 0 for every method, got {method}: {lr!r}")
    unknown = sorted(set(obj.beta_by_method) - set(METHODS))
    if unknown:
        fail("beta_by_method", f"has unknown method(s) {', '.join(unknown)}; allowed: {', '.join(METHODS)}")
    for method, beta in obj.beta_by_method.items():
        if not isinstance(beta, (int, float)) or beta <= 0:
            fail("beta_by_method", f"must be > 0 for every method named, got {method}: {beta!r}")
    for key in ("max_steps", "save_steps", "weight_decay", "max_grad_norm"):
        if getattr(obj, key) < 0:
            fail(key, f"must be >= 0, got {getattr(obj, key)!r}")
    for key in ("warmup_ratio", "adam_beta1", "adam_beta2", "delta_momentum"):
        if not 0.0 <= getattr(obj, key) < 1.0:
            fail(key, f"must be in [0, 1), got {getattr(obj, key)!r}")
    if obj.deepspeed and not (REPO_ROOT / obj.deepspeed).is_file():
        fail("deepspeed", f"names a file that does not exist: {REPO_ROOT / obj.deepspeed}")


def _where(path: Path, lines: dict, dotted: str) -> str:
    """'file, line N' for a key of the file; 'file (override k=v)' for an override or a key inside one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        loc = lines.get(".".join(parts[:i]))
        if isinstance(loc, str):
            return f"{path} ({loc})"
    line = lines.get(dotted)
    return f"{path}, line {line}" if line else f"{path}"


def _key_lines(root, path: Path) -> dict[str, int | str]:
    """Map each dotted key of a composed YAML document to its 1-based line number (for error
    messages). A key given twice in one mapping is an error: YAML would silently keep the last."""
    out: dict[str, int | str] = {}

    def walk(node, prefix):
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[str, int] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                continue  # not a key we have; _build names it
            key, line = f"{prefix}{k.value}", k.start_mark.line + 1
            if k.value in seen:
                raise ConfigError(f"{path}, line {line}: duplicate key '{key}' (first set on line {seen[k.value]}); "
                                  "YAML would silently keep the last one")
            seen[k.value] = out[key] = line
            walk(v, key + ".")

    walk(root, "")
    return out


def _set_dotted(data: dict, keys: list[str], value: Any, where: str) -> None:
    for k in keys[:-1]:
        data = data.setdefault(k, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: '{k}' is not a section, so it has no key '{keys[-1]}'")
    data[keys[-1]] = value

# -----------------------------------------------------------------------------
# feasibility: every set a profile asks the miniature world for must exist (its samplers draw
# distinct questions until they have enough, so an impossible size never finishes)

_FEASIBILITY_CAP = 2000  # more distinct questions exist for a larger max_value, never fewer


@functools.lru_cache(maxsize=256)
def _arith_questions(steps: int, max_value: int, max_operand: int) -> int:
    """How many distinct questions of `steps` steps tiny.arithmetic.random_problem can draw. Mirrors its
    rules (start in [10, min(99, max_value)]; + and - by 1..max_operand, * by 2..9; every value in
    [0, max_value]); tests/test_config.py checks the count against the sampler itself."""
    m = max_value
    paths = [1] * (m + 1)  # paths[v]: operation sequences of the remaining length from value v
    for _ in range(steps):
        below = [0]  # below[i] = sum(paths[:i])
        for x in paths:
            below.append(below[-1] + x)
        nxt = []
        for v in range(m + 1):
            total = below[v + min(max_operand, m - v) + 1] - below[v + 1]  # + b
            total += below[v] - below[v - min(max_operand, v)]  # - b
            if 2 * v <= m:  # * b
                total += 8 * paths[0] if v == 0 else sum(paths[v * b] for b in range(2, min(9, m // v) + 1))
            nxt.append(total)
        paths = nxt
    return sum(paths[10:min(99, m) + 1])


def _arith_count(w: WorldConfig, steps: int, need: int) -> int:
    """Distinct questions of a tier, counted exactly only when a capped count falls short of `need`."""
    have = _arith_questions(steps, min(w.arith_max_value, _FEASIBILITY_CAP), w.arith_max_operand)
    if have >= need or w.arith_max_value <= _FEASIBILITY_CAP:
        return have
    return _arith_questions(steps, w.arith_max_value, w.arith_max_operand)


def _check_feasible(w: WorldConfig, steps: list[int], size: int, key: str, path: Path, lines: dict) -> None:
    """`size` (the value of `key`) distinct questions per arithmetic tier in `steps` and per skill must
    exist. The error points at the limiting world key, or at `key` when an override set it."""
    def where(limit):
        return _where(path, lines, key if isinstance(lines.get(key), str) else f"world.{limit}")

    for s in sorted(set(steps)):
        have = _arith_count(w, s, size)
        if size > have:
            raise ConfigError(f"{where('arith_max_value')}: '{key}' = {size} asks for {size} distinct {s}-step questions, "
                              f"but world.arith_max_value={w.arith_max_value} and world.arith_max_operand="
                              f"{w.arith_max_operand} allow only {have}")
    lo, hi = w.skill_word_len
    words = sum(26 ** n for n in range(lo, hi + 1))
    if w.skills and size > words:
        raise ConfigError(f"{where('skill_word_len')}: '{key}' = {size} asks for {size} distinct words per skill, but "
                          f"world.skill_word_len={w.skill_word_len} allows only {words}")


def _check_profile_feasible(p: Profile, path: Path, lines: dict) -> None:
    if (p.model.source == "scratch") != (p.tasks == "miniature"):  # only the miniature pretrains a base here
        key = "tasks" if "tasks" in lines else "model.source"
        raise ConfigError(f"{_where(path, lines, key)}: 'tasks' is {p.tasks!r} but model.source is "
                          f"{p.model.source!r}; the miniature builds its model (source: scratch), the paper's tasks "
                          "load a pretrained one (source: pretrained)")
    w = p.world
    probes = [("pretrain.probe_size", p.pretrain.probe_size, p.pretrain.probe_every),
              ("experiments.probe_size", p.experiments.probe_size, p.experiments.probe_every and p.experiments.probe_methods)]
    for key, size, used in probes:
        if used:
            _check_feasible(w, w.arith_train_steps, size, key, path, lines)
    if p.tasks == "miniature":  # its elicitation: fresh questions of the world's training tiers, none a test question
        train = set(w.arith_train_steps)
        taken = w.test_size_per_tier * len(train & set(w.arith_test_steps))
        room = sum(_arith_count(w, s, p.rectification.questions + taken) for s in train) - taken
        if p.rectification.questions > room:
            raise ConfigError(f"{_where(path, lines, 'rectification.questions')}: 'rectification.questions' = "
                              f"{p.rectification.questions}, but world.arith_train_steps={w.arith_train_steps} have only "
                              f"{max(room, 0)} distinct questions that are not test questions")
