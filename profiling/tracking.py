"""Everything MLflow, in one module.

One parent run per pipeline run, a nested run per stage; the whole resolved
config as params; Delta versions read and written as tags; the encoder logged
with a signature and registered. Stages call these helpers and never the
fluent API directly. ``profiling forget`` reaches the runs' logged sample
explanations here too, through each run's artifact repository (local folders
and served ``mlflow-artifacts:`` stores alike).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import posixpath
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import ViewType
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from profiling.config import ProfilingConfig
from profiling.exceptions import MissingStageOutput
from profiling.tables import TableVersion

log = logging.getLogger(__name__)

MODEL_ALIAS = "current"  # the version infer scores with
CHALLENGER_ALIAS = "challenger"  # a newly trained version until the promotion gate decides (profiling.promotion)
SAMPLE_EXPLANATION = re.compile(r"explain/sample_user_\d+\.json")


def configure(config: ProfilingConfig) -> None:
    """Point MLflow at the configured store and experiment (created with its artifact folder).

    MLflow also exports the URI as ``MLFLOW_TRACKING_URI`` for child processes; the variable is put back as
    it was, since a ``profiling`` child of another workdir (a benchmark's runs, a test's) would take it for
    the operator's setting (``profiling.config.ENVIRONMENT``). Training processes get the URI explicitly.
    """
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(config.tracking_uri)
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
    if mlflow.get_experiment_by_name(config.mlflow.experiment) is None:
        mlflow.create_experiment(config.mlflow.experiment, artifact_location=config.artifact_location)
    mlflow.set_experiment(config.mlflow.experiment)


def _process_tags() -> dict[str, str]:
    return {"profiling.host": socket.gethostname(), "profiling.pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def close_dead_runs(config: ProfilingConfig) -> list[str]:
    """Mark KILLED the runs still RUNNING whose process on this host is gone (killed, out of memory):
    MLflow would show them running for ever. Returns their ids."""
    experiment = mlflow.get_experiment_by_name(config.mlflow.experiment)
    if experiment is None:
        return []
    client = MlflowClient()
    here = socket.gethostname()
    closed = []
    for run in client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"):
        tags = run.data.tags
        pid = tags.get("profiling.pid", "")
        if tags.get("profiling.host") == here and pid.isdigit() and not _alive(int(pid)):
            client.set_tag(run.info.run_id, "profiling.closed_because", f"process {pid} was gone at the next start")
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    if closed:
        log.warning("marked %d MLflow run(s) KILLED whose process died: %s", len(closed), ", ".join(closed))
    return closed


@contextlib.contextmanager
def pipeline_run(config: ProfilingConfig, snapshot_date: dt.date, name: str = "pipeline") -> Iterator[str]:
    """The parent run of one pipeline run; yields its id."""
    configure(config)
    close_dead_runs(config)
    with mlflow.start_run(run_name=f"{name} {snapshot_date}") as run:
        mlflow.log_params(config.flat())
        mlflow.set_tags({"snapshot_date": str(snapshot_date), "stage": name, **_process_tags()})
        yield run.info.run_id


@contextlib.contextmanager
def stage_run(config: ProfilingConfig, stage: str, snapshot_date: dt.date) -> Iterator[str]:
    """A nested run under the active pipeline run, or a run of its own when a stage runs alone."""
    if mlflow.active_run() is None:
        with pipeline_run(config, snapshot_date, stage) as run_id:
            yield run_id
        return
    with mlflow.start_run(run_name=stage, nested=True) as run:
        mlflow.set_tags({"snapshot_date": str(snapshot_date), "stage": stage, **_process_tags()})
        yield run.info.run_id


def record_tables(read: list[TableVersion] = (), written: list[TableVersion] = ()) -> None:
    """Tag the active run with the Delta version of every table it read and wrote, and log each table read
    as an input of the run (a Delta dataset source with its version: MLflow's lineage)."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    tags = {f"delta.read.{t.name}": str(t.version) for t in read}
    tags.update({f"delta.written.{t.name}": str(t.version) for t in written})
    if tags:
        mlflow.set_tags(tags)
    for t in read:  # named in Spark's session catalog: MLflow takes other catalogs for Unity Catalog's
        source = DeltaDatasetSource(delta_table_name=f"spark_catalog.{t.name}", delta_table_version=t.version)
        mlflow.log_input(MetaDataset(source, name=t.name, digest=f"v{t.version}"), context="read")


def metric_name(key: str) -> str:
    """MLflow metric names admit no ``@``: ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return key.replace("@", "_at_")


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items()}, step=step)


def log_metrics_to_run(tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """For training processes: log into the run the driver opened, by id, without touching fluent state."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    MlflowClient(tracking_uri).log_batch(
        run_id, metrics=[Metric(metric_name(k), float(v), stamp, step) for k, v in metrics.items()]
    )


def model_requirements() -> list[str]:
    """The pinned packages the registered model loads with, as installed here."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("mlflow", "torch", "numpy", "pandas", "scipy", "cloudpickle")]


def _package_folder(scratch: Path) -> Path:
    """This package's folder on disk, for the model's ``code_paths``; a copy in ``scratch`` where the package
    is imported from an archive (spark-submit ``--py-files profiling-….whl``)."""
    here = Path(__file__).parent
    if here.is_dir():
        return here
    from importlib.resources import files

    def copy(node, to: Path) -> None:
        to.mkdir(parents=True, exist_ok=True)
        for child in node.iterdir():
            if child.is_dir():
                copy(child, to / child.name)
            else:
                (to / child.name).write_bytes(child.read_bytes())

    copy(files("profiling"), scratch / "profiling")
    return scratch / "profiling"


def log_encoder(model, config: ProfilingConfig) -> str:
    """Log the encoder as a portable pyfunc (``profiling.model.portable``: this package's model code and
    pinned requirements travel with it) and register it as the challenger, or as ``current`` when no
    version is current yet (nothing to compare it with); returns the version."""
    from dataclasses import asdict

    from profiling.model.encoder import pack_encoder
    from profiling.model.portable import PortableEncoder
    from profiling.model.profiles import ProfileSettings

    if model.vocabulary is None:
        raise ValueError("the encoder has no vocabulary: set model.vocabulary before it is registered")
    model.eval()
    settings = ProfileSettings.of(config)
    portable = PortableEncoder(model, settings)
    example = portable.example()
    with tempfile.TemporaryDirectory() as folder:
        package = _package_folder(Path(folder))
        packed = Path(folder) / "encoder.pt"
        packed.write_bytes(pack_encoder(model))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "model" / "pyfunc_model.py"),
            artifacts={"encoder": str(packed)},
            model_config=asdict(settings),
            code_paths=[str(package)],
            signature=mlflow.models.infer_signature(example, portable.predict(None, example)),
            input_example=example,
            registered_model_name=config.mlflow.registered_model,
            pip_requirements=model_requirements(),
        )
    version = str(info.registered_model_version)
    client, name = MlflowClient(), config.mlflow.registered_model
    try:
        client.get_model_version_by_alias(name, MODEL_ALIAS)
        client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
    except mlflow.exceptions.MlflowException:  # the first version: nothing to gate it against
        client.set_registered_model_alias(name, MODEL_ALIAS, version)
    return version


def pending_challenger(config: ProfilingConfig) -> tuple[str, str] | None:
    """(challenger, champion): the version awaiting the promotion gate and the one carrying ``current``;
    None when no challenger awaits."""
    configure(config)
    client, name = MlflowClient(), config.mlflow.registered_model
    try:
        challenger = str(client.get_model_version_by_alias(name, CHALLENGER_ALIAS).version)
    except mlflow.exceptions.MlflowException:
        return None
    champion = current_model_version(config)
    if challenger == champion:  # promoted by hand since
        client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
        return None
    return challenger, champion


def promote(config: ProfilingConfig, version: str) -> None:
    """Move ``current`` to ``version``; a challenger alias on it is cleared (it is decided)."""
    configure(config)
    client, name = MlflowClient(), config.mlflow.registered_model
    client.set_registered_model_alias(name, MODEL_ALIAS, version)
    clear_challenger(config, version)


def clear_challenger(config: ProfilingConfig, version: str) -> None:
    """Take the ``challenger`` alias off ``version`` (the gate has decided on it)."""
    client, name = MlflowClient(), config.mlflow.registered_model
    try:
        if str(client.get_model_version_by_alias(name, CHALLENGER_ALIAS).version) == version:
            client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
    except mlflow.exceptions.MlflowException:
        pass


def log_quality_report(report) -> None:
    """An ingest run's data-quality report: its counts as metrics, the whole of it as ``data_quality.json``."""
    log_metrics(report.metrics())
    mlflow.log_dict(report.to_dict(), "data_quality.json")


def log_figure(fig, artifact_file: str) -> str:
    """A matplotlib figure as a PNG artifact of the active run; returns its artifact path."""
    mlflow.log_figure(fig, artifact_file)
    return artifact_file


def log_explanation(doc: dict, fig, stem: str) -> list[str]:
    """One user's explanation into the active run: ``<stem>.json`` and ``<stem>.png``."""
    mlflow.log_dict(doc, f"{stem}.json")
    return [f"{stem}.json", log_figure(fig, f"{stem}.png")]


@dataclass(frozen=True)
class LoggedExplanation:
    """A sample explanation logged to a run: ``<stem>.json`` (``doc``) and ``<stem>.png`` among its artifacts."""

    artifact_uri: str
    stem: str
    doc: dict


def logged_explanations(config: ProfilingConfig) -> Iterator[LoggedExplanation]:
    """Every sample explanation of every run of the experiment.

    Deleted runs are included: their artifacts stay in the store until ``mlflow gc`` removes them.
    """
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    if experiment is None:
        return
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, page_token=token)
        for run in page:
            repo = get_artifact_repository(run.info.artifact_uri, config.tracking_uri)
            for info in repo.list_artifacts("explain"):
                if info.is_dir or not SAMPLE_EXPLANATION.fullmatch(info.path):
                    continue
                with tempfile.TemporaryDirectory() as folder:
                    doc = json.loads(Path(repo.download_artifacts(info.path, folder)).read_text())
                yield LoggedExplanation(run.info.artifact_uri, info.path.removesuffix(".json"), doc)
        token = page.token
        if not token:
            return


def delete_explanation(config: ProfilingConfig, explanation: LoggedExplanation) -> int:
    """Delete the explanation's JSON and PNG from its run; returns the number of artifacts deleted."""
    repo = get_artifact_repository(explanation.artifact_uri, config.tracking_uri)
    present = {info.path for info in repo.list_artifacts(posixpath.dirname(explanation.stem))}
    gone = [path for path in (f"{explanation.stem}.json", f"{explanation.stem}.png") if path in present]
    for path in gone:
        repo.delete_artifacts(path)
    return len(gone)


def replace_explanation(config: ProfilingConfig, explanation: LoggedExplanation, doc: dict, fig) -> int:
    """Overwrite the explanation's JSON with ``doc`` and its PNG with ``fig``; returns the artifacts written."""
    from profiling.figures import save_png

    repo = get_artifact_repository(explanation.artifact_uri, config.tracking_uri)
    folder, name = posixpath.split(explanation.stem)
    with tempfile.TemporaryDirectory() as local:
        document, picture = Path(local) / f"{name}.json", Path(local) / f"{name}.png"
        document.write_text(json.dumps(doc, indent=2))
        save_png(fig, picture)
        for path in (document, picture):
            repo.log_artifact(str(path), folder)
    return 2


def load_encoder(config: ProfilingConfig, version: str):
    """The registered encoder of that version, on the CPU, with the vocabulary it was trained with."""
    configure(config)
    uri = f"models:/{config.mlflow.registered_model}/{version}"
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise MissingStageOutput(f"cannot load model {uri} from {config.tracking_uri}: "
                                 f"{(str(exc).splitlines() or [''])[0]}") from None
    if "pytorch" in loaded.metadata.flavors:  # registered before the model was a portable pyfunc
        from mlflow import pytorch

        model = pytorch.load_model(uri, map_location="cpu")
    else:
        model = loaded.unwrap_python_model().encoder
    if getattr(model, "vocabulary", None) is None:  # registered before models kept their vocabulary
        raise MissingStageOutput(f"model {uri} carries no vocabulary, so its indices cannot be matched to a "
                                 "snapshot's keys: run the train stage to register a version that does")
    return model.eval()


def current_model_version(config: ProfilingConfig) -> str:
    """The registered encoder version that carries the ``current`` alias."""
    configure(config)
    try:
        return str(MlflowClient().get_model_version_by_alias(config.mlflow.registered_model, MODEL_ALIAS).version)
    except mlflow.exceptions.MlflowException:
        raise MissingStageOutput(
            f"no registered model {config.mlflow.registered_model}@{MODEL_ALIAS} in {config.tracking_uri}: "
            "run the train stage first"
        ) from None


def registered_version(config: ProfilingConfig, version: str | None = None) -> str:
    """``version`` of the registered encoder once the registry knows it, else the one carrying
    ``@current``: a question for MLflow alone, so the CLI asks it before starting Spark."""
    if version is None:
        return current_model_version(config)
    configure(config)
    try:
        MlflowClient().get_model_version(config.mlflow.registered_model, version)
    except mlflow.exceptions.MlflowException:
        raise MissingStageOutput(f"no version {version} of registered model {config.mlflow.registered_model} "
                                 f"in {config.tracking_uri}") from None
    return version


def current_model_age(config: ProfilingConfig) -> dict:
    """Which version carries ``@current``, when it was registered and its age in days (version None if none).

    A scheduler reads this to decide whether the train stage is due (see jobs/profiling_daily.py).
    """
    configure(config)
    name = config.mlflow.registered_model
    try:
        version = MlflowClient().get_model_version_by_alias(name, MODEL_ALIAS)
    except mlflow.exceptions.MlflowException:
        return {"registered_model": name, "version": None, "created": None, "age_days": None}
    created = dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.timezone.utc)
    age = (dt.datetime.now(dt.timezone.utc) - created).total_seconds() / 86400
    return {"registered_model": name, "version": str(version.version), "created": created.isoformat(),
            "age_days": round(age, 4)}
