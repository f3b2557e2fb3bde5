"""Job configuration: YAML in ``conf/``, validated once, at the edge.

Every setting is declared once, here: a pydantic field with its default and a description.
``conf/default.yaml`` is generated from these models (:func:`defaults_yaml`), so the two cannot
disagree. Every stage receives a :class:`ProfilingConfig`; nothing below the CLI reads YAML or
environment variables for settings. Unknown keys and wrong types are errors that name the key and the
file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from profiling.exceptions import ConfigError



def packaged(*parts: str) -> Path | Traversable:
    """A file shipped inside the package: ``profiling/conf`` and ``profiling/contracts`` link to the
    top-level ``conf/`` and ``schemas/``, so a checkout, an installed wheel and a wheel passed to
    spark-submit with ``--py-files`` (read in place, as a zip) all find the same files."""
    path = resources.files("profiling").joinpath(*parts)
    return path.resolve() if isinstance(path, Path) else path


DEFAULT_CONFIG = packaged("conf", "default.yaml")
DEMO_CONFIG = packaged("conf", "demo.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Section):
    dir: str | None = Field(None, description=(
        "Folder holding behaviour.*, preference.*, social.* and items.* (CSV, CSV.gz, Parquet file or folder, "
        "or a Delta table folder); a path set for one log wins over it. In this and the paths below, {date} "
        "stands for the snapshot date (YYYY-MM-DD): /logs/{date} reads each day's own folder."))
    behaviour: str | None = Field(None, description=(
        "The behaviour log (what users did with items: views, clicks, carts, purchases, plays, ratings); "
        "null: looked for in input.dir."))
    preference: str | None = Field(None, description=(
        "The preference log (declared or inferred likes, demographics); null: looked for in input.dir."))
    social: str | None = Field(None, description=(
        "The social log (friends, follows, trust); null: looked for in input.dir."))
    items: str | None = Field(None, description=(
        "Item metadata (category, title), optional; null: looked for in input.dir."))
    event_types: list[str] | None = Field(None, description=(
        "Behaviour event types accepted, as an allow-list; other types are quarantined (unknown_event_type). "
        "null accepts any non-empty type."))
    millisecond_timestamps: Literal["reject", "convert"] = Field("reject", description=(
        "Timestamps that only make sense in milliseconds (after year 5000 as seconds): \"reject\" quarantines "
        "them (timestamp_in_milliseconds), \"convert\" divides them by 1000."))
    future_tolerance_hours: float = Field(24.0, ge=0, le=87_600, description=(
        "Events later than the end of the snapshot day plus this many hours are quarantined (future_timestamp)."))
    max_quarantined_share: float = Field(0.05, ge=0, le=1, description=(
        "Quality gate: a log whose quarantined share of rows passes this stops ingest with one line (exit "
        "code 2) after writing the quarantine and ingest_runs; nothing else of the run is written."))
    max_reason_share: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict, description=(
        "The same gate per reason code (e.g. {duplicate_row: 0.01}); reasons not named have no ceiling of their "
        "own."))
    full_state: list[Literal["preference", "social"]] = Field(default_factory=list, description=(
        "Logs given as the whole current state each day (a full export of preferences or edges): a row held "
        "since an earlier date that the day's log lacks was withdrawn or removed, and leaves the snapshot "
        "(removed_on). Logs not named only add rows, so a day's log may hold its new rows only. A log not "
        "given on a day ends nothing."))

    @field_validator("max_reason_share")
    @classmethod
    def _known_reasons(cls, value: dict[str, float]) -> dict[str, float]:
        from profiling.quality import REASONS

        unknown = sorted(set(value) - set(REASONS))
        if unknown:
            raise ValueError(f"unknown reason code(s) {', '.join(unknown)} (known: {', '.join(REASONS)})")
        return value


class SparkConfig(_Section):
    master: str = Field("local[*]", description=(
        "Spark master URL (local[N], spark://HOST:PORT, yarn); under spark-submit the submit line's wins."))
    app_name: str = Field("profiling", description="Spark application name.")
    driver_memory: str = Field("4g", description=(
        "Driver JVM memory (local mode runs the tasks in the driver); under spark-submit the submit line's wins."))
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions.")
    log_level: str = Field("WARN", description="Log level of Spark's own logging (ERROR, WARN, INFO, DEBUG).")
    show_progress: bool = Field(True, description="Spark's console progress bars.")
    conf: dict[str, str] = Field(default_factory=dict, description=(
        "Extra Spark settings, passed as they are (e.g. spark.executor.memory: 2g); on the command line "
        "--set spark.conf.spark.executor.memory=2g."))

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            nested = sorted(str(k) for k, v in value.items() if isinstance(v, (dict, list)))
            if nested:
                raise ValueError(f"a Spark setting takes one value, not a mapping or a list: {', '.join(nested)} "
                                 "(to set spark.x.y on the command line: --set spark.conf.spark.x.y=VALUE)")
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value


class CatalogConfig(_Section):
    database: str = Field("profiling", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=(
        "Catalog database that holds every table and view."))


class MlflowConfig(_Section):
    tracking_uri: str | None = Field(None, description=(
        "MLflow tracking URI (a server: http://host:5000); null: the environment's MLFLOW_TRACKING_URI if set, "
        "else sqlite:///<workdir>/mlflow.db with artifacts in <workdir>/mlartifacts."))
    experiment: str = Field("profiling", description="MLflow experiment of every run.")
    registered_model: str = Field("profiling-encoder", description=(
        "Registered model name of the encoder; infer scores with the version carrying the alias current, and "
        "a newly trained one carries challenger until the promotion gate decides."))
    promotion_tolerance: float = Field(0.005, ge=0.0, le=1.0, description=(
        "Promotion gate: a challenger becomes current when its test NDCG@10 is at least the current version's "
        "minus this, both ranking the same snapshot's test targets (evaluate, and the pipeline after train)."))


class SequencesConfig(_Section):
    max_len: int = Field(200, ge=3, le=100_000, description=(
        "Events kept per user (the most recent ones): the history training learns from and profiles cover."))
    social_context_items: int = Field(10, ge=0, description=(
        "Items most common among a user's circle (neighbours in either edge direction), added as social "
        "context events."))
    category_dimensions: list[str] = Field(default_factory=lambda: ["category", "genre"], description=(
        "Preference dimensions whose keys are item categories."))


class ModelConfig(_Section):
    max_len: int = Field(50, ge=2, le=4096, description=(
        "Events the encoder attends over at once; longer histories are cut into windows from the newest event "
        "backwards."))
    dim: int = Field(64, ge=8, description="Width of the embeddings and hidden states.")
    heads: int = Field(2, ge=1, description="Attention heads per layer; must divide model.dim.")
    layers: int = Field(2, ge=1, description="Self-attention (pre-norm Transformer) layers.")
    interests: int = Field(4, ge=1, description="Interest vectors per user (K).")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout on the inputs and inside each layer.")

    @field_validator("heads")
    @classmethod
    def _heads_divide_dim(cls, heads: int, info: Any) -> int:
        dim = info.data.get("dim")
        if dim is not None and dim % heads:
            raise ValueError(f"model.dim ({dim}) must be a multiple of model.heads ({heads})")
        return heads


class TrainConfig(_Section):
    num_processes: int = Field(2, ge=1, description="DDP processes TorchDistributor starts.")
    use_gpu: bool = Field(False, description=(
        "One GPU per process, nccl backend (gloo on CPUs); in local mode the driver must see "
        "train.num_processes GPUs."))
    local_mode: bool = Field(True, description=(
        "TorchDistributor runs the processes on the driver (true) or as a barrier stage of Spark tasks (false)."))
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "Autocast: \"auto\" is bf16 on a GPU that supports it and full fp32 on CPUs; \"fp32\" or \"bf16\" force "
        "one."))
    epochs: int = Field(100, ge=1, description="Most epochs trained.")
    patience: int = Field(10, ge=1, description=(
        "Early stopping: epochs without a better validation NDCG before training stops."))
    max_minutes: float = Field(20.0, gt=0, description=(
        "Training stops after the epoch that passes this budget (the best epoch so far is kept); a rerun with "
        "another budget resumes the same checkpoints."))
    batch_size: int = Field(128, ge=1, description="Training windows per batch and process.")
    learning_rate: float = Field(0.002, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(50, ge=0, description="Steps over which the learning rate rises linearly to its value.")
    interest_loss_weight: float = Field(0.5, ge=0, description=(
        "Weight of the multi-interest loss (label-aware attention ranks the target) beside the next-item loss."))
    interest_diversity: float = Field(1.0, ge=0, description=(
        "Weight of the penalty ||A A^T - I||^2 on the interests' attention (Lin et al. 2017): without it a "
        "user's K interest vectors collapse into near-copies (mean pairwise cosine 0.98 on generated data)."))
    interest_score_weights: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0], min_length=1, description=(
            "After training, the interest head joins next-item scoring: score = next-item head + w * interest "
            "head, with the w of this list that ranks the validation targets best ([0]: next-item head only)."))
    negatives: int = Field(20000, ge=0, description=(
        "Catalogues with more items than this train with a sampled softmax over this many shared negatives "
        "(the target always included); smaller ones use the full softmax (on ciaodvd's 16k items the full "
        "softmax beat 2,048 sampled negatives on validation)."))
    min_behaviour_events: int = Field(1000, ge=1, description=(
        "Floor: train refuses to fit or register a model on fewer behaviour events in the sequences."))
    min_users: int = Field(10, ge=1, description=(
        "Floor: train refuses to fit or register a model on fewer users with a validation target (3 or more "
        "behaviour events)."))
    shuffle_buffer: int = Field(4096, ge=1, description=(
        "Rows held for shuffling, and windows pooled for length-bucketed batches."))
    loader_workers: int = Field(0, ge=0, description=(
        "DataLoader processes per training process. 0 reads in the training process itself: enough on CPUs "
        "(one process feeds ~600k positions/s, about 40x what it trains); a GPU needs a few more."))
    seed: int = Field(42, description=(
        "Seed of the weights' initialisation, of each epoch (with the epoch) and of the data order."))
    eval_k: list[int] = Field(default_factory=lambda: [10, 20, 50], description=(
        "Cut-offs K of the validation Recall@K and NDCG@K; NDCG at the first one picks the best epoch and the "
        "interest score weight."))


class InferConfig(_Section):
    batch_size: int = Field(512, ge=1, description=(
        "Users scored per forward pass (also the validation batch of training)."))
    use_gpu: bool = Field(False, description=(
        "Score on the GPU Spark assigned to each task (spark.task.resource.gpu.amount), else on the CPU."))
    evidence_events: int = Field(5, ge=0, le=1000, description=(
        "Events kept per user and interest in user_interest_evidence (top N by the interest's evidence "
        "attention)."))
    merge_interests_cosine: float | None = Field(0.95, gt=0.0, le=1.0, description=(
        "Interests whose vectors, or whose evidence attentions over the newest window, have at least this "
        "cosine are merged into one (weights summed) before the profile tables are written, so a user has 1 to "
        "model.interests interests that differ; null keeps all model.interests."))
    interest_cluster_distance: float | None = Field(2.0, gt=0.0, description=(
        "Interests as PinnerSage finds them: the user's own events of the newest window grouped by Ward's "
        "clustering of their content (item and category embeddings, unit length) cut at this distance, at most "
        "model.interests groups; each group's decayed mean content is an interest, its decayed share of the "
        "events the weight (then merge_interests_cosine applies). null: the encoder's head interests, merged."))


class ProfileConfig(_Section):
    half_life_days: float | None = Field(30.0, gt=0.0, description=(
        "Half-life of an event's contribution to the interest weights and to the category, event type and source "
        "weights: it counts 2^(-age / half_life_days), age measured to the end of the snapshot day; an event "
        "without a time counts as the user's newest dated event. null: every event counts alike."))
    long_half_life_days: float | None = Field(365.0, gt=0.0, description=(
        "Half-life of the long-term weights (user_interest_weights rows of horizon long): every event the user "
        "ever had counts 2^(-age / long_half_life_days) in them, events older than sequences.max_len included; "
        "undated events as for half_life_days. null: every event counts alike."))


class ExplainConfig(_Section):
    sample_users: int = Field(3, ge=0, le=100, description=(
        "Users whose explain figure is logged to every infer run in MLflow (picked by a hash of the id)."))
    strong_interest: float = Field(0.2, gt=0.0, le=1.0, description=(
        "An interest counts as strong in the run's summary figure when its weight is at least this."))
    recent_events: int = Field(20, ge=1, le=200, description=(
        "Newest events shown in the attention heat map of `profiling explain --png`."))


class PrivacyConfig(_Section):
    hash_user_ids: bool = Field(False, description=(
        "Replace user ids at ingest by a keyed hash (HMAC-SHA256), the same in all three logs."))
    key_env: str = Field("PROFILING_ID_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=(
        "Environment variable holding the hash key: the key itself never sits in a config file or in MLflow."))
    audit_key_env: str = Field("PROFILING_AUDIT_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=(
        "Environment variable holding the key of forget_requests' digests when ids are not pseudonymised "
        "(pseudonyms are digested under key_env's key); unset: no digests are kept."))


class MaintenanceConfig(_Section):
    retain_days: float = Field(7.0, ge=0.0, description=(
        "`profiling maintain` keeps this many days of time travel: VACUUM deletes the files no table version "
        "of that span reads. Below the tables' delta.deletedFileRetentionDuration (7 days) Delta's own check "
        "is lifted for that call; 0 removes every file the current versions do not read."))


# Values of settings whose name says they are secret are masked wherever the config is shown.
_SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|access\.key|private", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class ProfilingConfig(_Section):
    """The whole resolved configuration of one run."""

    workdir: str = Field("work", description=(
        "Folder for the Delta tables, the catalog (Derby metastore and warehouse), the MLflow store and the "
        "checkpoints."))
    input: InputConfig = Field(default_factory=InputConfig, description=(
        "The logs ingest reads, and which of their rows it accepts."))
    spark: SparkConfig = Field(default_factory=SparkConfig, description=(
        "The Spark session. Under spark-submit the submit line owns the master, the driver's memory and the jars."))
    catalog: CatalogConfig = Field(default_factory=CatalogConfig, description="Where the tables are registered.")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description=(
        "Tracking: every run with its config, metrics and table versions, and the registered encoder."))
    sequences: SequencesConfig = Field(default_factory=SequencesConfig, description=(
        "The sequences stage: one time-ordered event sequence per user."))
    model: ModelConfig = Field(default_factory=ModelConfig, description="The encoder's shape.")
    train: TrainConfig = Field(default_factory=TrainConfig, description=(
        "The train stage: TorchDistributor, early stopping on validation NDCG, checkpoints."))
    infer: InferConfig = Field(default_factory=InferConfig, description=(
        "The infer stage: every user scored in a distributed pass."))
    profile: ProfileConfig = Field(default_factory=ProfileConfig, description=(
        "What the profile tables say: how an event's age weighs on the user's weights."))
    explain: ExplainConfig = Field(default_factory=ExplainConfig, description=(
        "Explanations: `profiling explain` and the figures every infer run logs."))
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Pseudonymous user ids.")
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig, description=(
        "`profiling maintain`: compaction and VACUUM of every table."))

    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir).resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.workdir_path / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: the workdir's for a local store; the server's own
        (its --default-artifact-root or served artifacts) for a tracking server."""
        if self.tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        return (self.workdir_path / "mlartifacts").as_uri()

    def flat(self) -> dict[str, str]:
        """The config as dotted keys, for MLflow params; secret-looking values and URL passwords masked."""
        return {key: "***" if _SECRET_NAME.search(key) else _URL_USERINFO.sub("***@", str(value))
                for key, value in _dotted(self.model_dump()).items()}


def _dotted(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys; the entries of a non-empty map (``spark.conf``) are keys of their own."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_dotted(value, dotted))
        else:
            out[dotted] = value
    return out


_DEFAULTS_HEADER = """\
# profiling's default configuration: local Spark, Delta tables and a Derby catalog under
# <workdir>/warehouse, MLflow in sqlite:///<workdir>/mlflow.db. Relative paths are resolved against
# the current directory. Any key can be overridden on the command line: --set train.epochs=5, and
# `profiling config show` prints the resolved values and where each one comes from.
#
# Generated from the settings' declarations in profiling/config.py, which hold every default and
# description: change them there, then run `profiling config defaults > conf/default.yaml`.
"""


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _flow_yaml(value: Any) -> str:
    """One value as YAML on one line (flow style for lists and maps)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


def defaults_yaml() -> str:
    """``conf/default.yaml``: every setting with its default, in declaration order, its description as a
    comment above it. Generated, so the file and the models cannot disagree."""
    lines = _DEFAULTS_HEADER.splitlines()

    def section(model: type[BaseModel], values: dict[str, Any], indent: str) -> None:
        for name, info in model.model_fields.items():
            if not indent:
                lines.append("")
            lines.extend(f"{indent}# {line}" for line in textwrap.wrap(
                info.description, 100 - len(indent) - 2, break_long_words=False, break_on_hyphens=False))
            if _is_section(info.annotation):
                lines.append(f"{indent}{name}:")
                section(info.annotation, values[name], indent + "  ")
            else:
                lines.append(f"{indent}{name}: {_flow_yaml(values[name])}")

    section(ProfilingConfig, ProfilingConfig().model_dump(mode="json"), "")
    return "\n".join(lines) + "\n"


def _map_settings(model: type[BaseModel] = None, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths of the settings that are free-form maps (``spark.conf``): their keys may hold dots."""
    found: set[tuple[str, ...]] = set()
    for name, info in (model or ProfilingConfig).model_fields.items():
        kind = info.annotation
        if _is_section(kind):
            found |= _map_settings(kind, (*prefix, name))
        elif getattr(kind, "__origin__", None) is dict:
            found.add((*prefix, name))
    return found


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "input.dir=/data"]`` into a nested dict (values parsed as YAML).

    Below a map setting the rest of the key is one key: ``spark.conf.spark.executor.memory=2g``
    sets ``spark.executor.memory`` in ``spark.conf``.
    """
    nested: dict[str, Any] = {}
    maps = _map_settings()
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r}: expected KEY=VALUE, e.g. train.epochs=5")
        node = nested
        parts = key.strip().split(".")
        cut = next((k for k in range(1, len(parts)) if tuple(parts[:k]) in maps), None)
        if cut is not None:
            parts = [*parts[:cut], ".".join(parts[cut:])]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r}: {part} is set twice")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _canonical(path: Path | Traversable) -> Path | Traversable:
    return path.resolve() if isinstance(path, Path) else path


@dataclass(frozen=True)
class Layer:
    """Settings from one origin, nested as in a config file; a later layer wins key by key.

    A config resolves from the models' defaults, then its files (``file <path>``, the ``base:`` chain
    first), then the environment for settings the files leave null (``environment <VARIABLE>``), then
    the command line (``--set``, ``--workdir``, ``--input``).
    """

    origin: str
    values: dict[str, Any]


def _file_layers(source: Path | Traversable, seen: tuple[Path | Traversable, ...] = ()) -> list[Layer]:
    """A config file and the files it extends, base first: ``base: other.yaml`` is relative to the file."""
    if not source.is_file():
        raise ConfigError(f"config file {source} does not exist")
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    base = data.pop("base", None)
    layer = Layer(f"file {_canonical(source)}", data)
    if base is None:
        return [layer]
    base_path = _canonical(source.parent / str(base))
    if base_path in seen:
        raise ConfigError(f"{source}: base: {base} includes itself")
    return [*_file_layers(base_path, (*seen, _canonical(source))), layer]


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated config and the layers it was resolved from, weakest first."""

    config: ProfilingConfig
    layers: tuple[Layer, ...]

    def origins(self) -> dict[str, str]:
        """Where each key of ``config.flat()`` comes from: the last layer that set it, else ``default``."""
        set_by: dict[str, str] = {}
        for layer in self.layers:
            set_by.update(dict.fromkeys(_dotted(layer.values), layer.origin))
        return {key: set_by.get(key, "default") for key in self.config.flat()}


# Environment variables a setting falls back to when the config files leave it null: the settings win.
ENVIRONMENT = {"MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri")}


def _environment_layers(files: dict[str, Any], environ: Mapping[str, str]) -> list[Layer]:
    """One layer per variable of ENVIRONMENT that is set while the files leave its setting null."""
    layers = []
    for variable, (section, key) in ENVIRONMENT.items():
        if environ.get(variable) and files.get(section, {}).get(key) is None:
            layers.append(Layer(f"environment {variable}", {section: {key: environ[variable]}}))
    return layers


def resolve_config(
    path: str | Path | Traversable | None = None, overrides: Sequence[Layer] = (),
    environ: Mapping[str, str] | None = None,
) -> ResolvedConfig:
    """Read a YAML config (default: ``conf/default.yaml``) and its base files, then the ``environ``
    variables of ENVIRONMENT for settings the files leave null, overlay ``overrides``, validate once.
    Errors name the key and the config file."""
    source = DEFAULT_CONFIG if path is None else path if isinstance(path, Traversable) else Path(path)
    file_layers = _file_layers(source)
    files: dict[str, Any] = {}
    for layer in file_layers:
        files = _merge(files, layer.values)
    layers = (*file_layers, *_environment_layers(files, environ or {}), *overrides)
    data: dict[str, Any] = {}
    for layer in layers:
        data = _merge(data, layer.values)
    try:
        return ResolvedConfig(ProfilingConfig.model_validate(data), layers)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" and "input" in err else ""
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{source}: {key}: {reason}{got}")
        raise ConfigError("\n".join(problems)) from None


def load_config(
    path: str | Path | Traversable | None = None, overrides: dict[str, Any] | None = None
) -> ProfilingConfig:
    """Read a YAML config (default: ``conf/default.yaml``), apply overrides (nested, as parse_overrides
    gives them), validate once."""
    return resolve_config(path, [Layer("--set", overrides)] if overrides else []).config


# Snapshot dates a run accepts: unix time starts in 1970, and the day after the snapshot (the end of
# its events, plus input.future_tolerance_hours) must still be a date Python and Spark can represent.
EARLIEST_SNAPSHOT = dt.date(1970, 1, 1)
LATEST_SNAPSHOT = dt.date(9999, 12, 1)


def parse_snapshot_date(value: str | dt.date | None) -> dt.date:
    """``YYYY-MM-DD`` or None (today, UTC)."""
    if value is None:
        return dt.datetime.now(dt.timezone.utc).date()
    if isinstance(value, dt.date):
        return value
    try:
        date = dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--snapshot-date {value!r}: expected YYYY-MM-DD") from None
    if not EARLIEST_SNAPSHOT <= date <= LATEST_SNAPSHOT:
        raise ConfigError(f"--snapshot-date {value}: expected a date from {EARLIEST_SNAPSHOT} to {LATEST_SNAPSHOT}")
    return date
