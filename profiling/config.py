"""Job configuration: YAML in ``conf/``, validated once, at the edge.

Every stage receives a :class:`ProfilingConfig`; nothing below the CLI reads
YAML or environment variables for settings. Unknown keys and wrong types are
errors that name the key and the file, so a typo never silently falls back to
a default.
"""

from __future__ import annotations

import datetime as dt
import re
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
    dir: str | None = None
    behaviour: str | None = None
    preference: str | None = None
    social: str | None = None
    items: str | None = None
    # Behaviour event types accepted (others are quarantined as unknown_event_type); null: any.
    event_types: list[str] | None = None
    # Timestamps that only make sense as milliseconds: quarantine them ("reject") or divide by 1000.
    millisecond_timestamps: Literal["reject", "convert"] = "reject"
    # Events later than the end of the snapshot day plus this many hours are quarantined.
    future_tolerance_hours: float = Field(24.0, ge=0)


class SparkConfig(_Section):
    master: str = "local[*]"
    app_name: str = "profiling"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(8, ge=1)
    log_level: str = "WARN"
    show_progress: bool = True
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value


class CatalogConfig(_Section):
    database: str = Field("profiling", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class MlflowConfig(_Section):
    tracking_uri: str | None = None
    experiment: str = "profiling"
    registered_model: str = "profiling-encoder"


class SequencesConfig(_Section):
    max_len: int = Field(200, ge=3, le=100_000)
    social_context_items: int = Field(10, ge=0)
    category_dimensions: list[str] = Field(default_factory=lambda: ["category", "genre"])


class ModelConfig(_Section):
    max_len: int = Field(50, ge=2, le=4096)
    dim: int = Field(64, ge=8)
    heads: int = Field(2, ge=1)
    layers: int = Field(2, ge=1)
    interests: int = Field(4, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @field_validator("heads")
    @classmethod
    def _heads_divide_dim(cls, heads: int, info: Any) -> int:
        dim = info.data.get("dim")
        if dim is not None and dim % heads:
            raise ValueError(f"model.dim ({dim}) must be a multiple of model.heads ({heads})")
        return heads


class TrainConfig(_Section):
    num_processes: int = Field(2, ge=1)
    use_gpu: bool = False
    local_mode: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1)
    max_minutes: float = Field(20.0, gt=0)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(0.002, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(50, ge=0)
    interest_loss_weight: float = Field(0.5, ge=0)
    interest_diversity: float = Field(1.0, ge=0)
    interest_score_weights: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0], min_length=1)
    negatives: int = Field(20000, ge=0)
    shuffle_buffer: int = Field(4096, ge=1)
    loader_workers: int = Field(0, ge=0)
    seed: int = 42
    eval_k: list[int] = Field(default_factory=lambda: [10, 20, 50])


class InferConfig(_Section):
    batch_size: int = Field(512, ge=1)
    use_gpu: bool = False
    evidence_events: int = Field(5, ge=0, le=1000)


class ExplainConfig(_Section):
    sample_users: int = Field(3, ge=0, le=100)
    strong_interest: float = Field(0.2, gt=0.0, le=1.0)
    recent_events: int = Field(20, ge=1, le=200)


class PrivacyConfig(_Section):
    # Replace user ids at ingest by a keyed hash (HMAC-SHA256), the same in all three logs.
    hash_user_ids: bool = False
    # The environment variable that holds the key: the key itself never sits in a file or in MLflow.
    key_env: str = Field("PROFILING_ID_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The environment variable that holds the key of forget_requests' digests when ids are not
    # pseudonymised (pseudonyms are digested under key_env's key); unset: no digests are kept.
    audit_key_env: str = Field("PROFILING_AUDIT_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


# Values of settings whose name says they are secret are masked wherever the config is shown.
_SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|access\.key|private", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class ProfilingConfig(_Section):
    """The whole resolved configuration of one run."""

    workdir: str = "work"
    input: InputConfig = Field(default_factory=InputConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    sequences: SequencesConfig = Field(default_factory=SequencesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir).resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.workdir_path / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str:
        return (self.workdir_path / "mlartifacts").as_uri()

    def flat(self) -> dict[str, str]:
        """The config as dotted keys, for MLflow params; secret-looking values and URL passwords masked."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, inner)
            elif _SECRET_NAME.search(prefix):
                out[prefix] = "***"
            else:
                out[prefix] = _URL_USERINFO.sub("***@", str(value))

        walk("", self.model_dump())
        return out


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "input.dir=/data"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r}: expected KEY=VALUE, e.g. train.epochs=5")
        node = nested
        parts = key.strip().split(".")
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


def _read_yaml(source: Path | Traversable, seen: tuple[Path | Traversable, ...] = ()) -> dict[str, Any]:
    """A config file as a dict; ``base: other.yaml`` (relative to the file) is read first and overlaid."""
    if not source.is_file():
        raise ConfigError(f"config file {source} does not exist")
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = _canonical(source.parent / str(base))
    if base_path in seen:
        raise ConfigError(f"{source}: base: {base} includes itself")
    return _merge(_read_yaml(base_path, (*seen, _canonical(source))), data)


def load_config(path: str | Path | Traversable | None = None, overrides: dict[str, Any] | None = None) -> ProfilingConfig:
    """Read a YAML config (default: ``conf/default.yaml``), apply overrides, validate once."""
    source = DEFAULT_CONFIG if path is None else path if isinstance(path, Traversable) else Path(path)
    data = _merge(_read_yaml(source), overrides or {})
    try:
        return ProfilingConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" and "input" in err else ""
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{source}: {key}: {reason}{got}")
        raise ConfigError("\n".join(problems)) from None


def parse_snapshot_date(value: str | dt.date | None) -> dt.date:
    """``YYYY-MM-DD`` or None (today, UTC)."""
    if value is None:
        return dt.datetime.now(dt.timezone.utc).date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--snapshot-date {value!r}: expected YYYY-MM-DD") from None
