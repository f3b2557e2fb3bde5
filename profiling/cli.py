"""The ``profiling`` command: one subcommand per stage, plus run, demo, generate, sql and config.

Parses arguments, loads and validates the config once, checks what can be
checked without Spark, builds the session and calls the library. A command imports its stage
(pyspark, torch, MLflow: seconds of CPU) only after those checks, so a refusal is quick. Errors a user
can fix (config, input, missing stage output) print one line and exit 2 instead
of a stack trace. The console shows profiling's own progress; what Spark, Ivy,
Hive and the workers print goes to a log file in the workdir (``--verbose``:
to the console, as under spark-submit), see ``profiling.console``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from profiling.config import (
    Layer, ProfilingConfig, ResolvedConfig, parse_overrides, parse_snapshot_date, resolve_config,
)
from profiling.console import PLAIN_FORMAT, restore_terminal, show_progress, shown_path
from profiling.exceptions import ConfigError, ProfilingError, QueryError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Batch user profiles from behaviour, preference and social logs on Spark.")
config_app = typer.Typer(no_args_is_help=True, help="The settings: their defaults, and the values a command would use.")
app.add_typer(config_app, name="config")
log = logging.getLogger("profiling")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default conf/default.yaml)")]
WorkdirOpt = Annotated[Optional[Path], typer.Option(help="Folder for tables, catalog, MLflow store, checkpoints")]
DateOpt = Annotated[Optional[str], typer.Option("--snapshot-date", help="YYYY-MM-DD (default: today, UTC)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.epochs=5")]
InputOpt = Annotated[Optional[Path], typer.Option("--input", help="Folder with behaviour/preference/social/items logs")]
FullRefreshOpt = Annotated[bool, typer.Option("--full-refresh", help=(
    "Rebuild every user, not only those the changes since the last run reached"))]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help=(
    "Show what Spark, Ivy, Hive and the workers print on the console instead of in <workdir>/logs"))]


def _setup_logging() -> None:
    """profiling's records as progress lines on the console; under spark-submit as timestamped lines
    among Spark's own, where operators read them."""
    from profiling.spark import launched_by_spark_submit

    if launched_by_spark_submit():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PLAIN_FORMAT)
    else:
        handler = show_progress(sys.stderr)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for noisy in ("py4j", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow sets its loggers' level from this variable when imported (here and in the training processes).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # pyspark logs every failed query as a JSON line; the CLI's one-line error already says it.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)


def _resolve(config: Path | None, workdir: Path | None, sets: list[str] | None,
             input_dir: Path | None = None) -> ResolvedConfig:
    """The config file with the command line on top: ``--set``, then ``--workdir`` and ``--input``, which win."""
    layers = [Layer("--set", parse_overrides(sets))]
    if workdir is not None:
        layers.append(Layer("--workdir", {"workdir": str(workdir)}))
    if input_dir is not None:
        layers.append(Layer("--input", {"input": {"dir": str(input_dir)}}))
    return resolve_config(config, layers, os.environ)


def _config(config: Path | None, workdir: Path | None, sets: list[str] | None,
            input_dir: Path | None = None) -> ProfilingConfig:
    return _resolve(config, workdir, sets, input_dir).config


def _existing_workdir(cfg: ProfilingConfig) -> ProfilingConfig:
    """``cfg``, once its workdir is known to hold a catalog. Only the commands that write one (ingest,
    run, demo) may start in a folder that holds none: for the others a mistyped ``--workdir`` is an
    error, not a new empty catalog."""
    from profiling.workdir import require_catalog

    require_catalog(cfg)
    return cfg


def _check_inputs(cfg: ProfilingConfig, snapshot_date: dt.date) -> None:
    """What ingest would refuse about its settings: a missing id key, a log that is not there."""
    from profiling.ingest import resolve_input_paths
    from profiling.privacy import id_key

    id_key(cfg)
    resolve_input_paths(cfg, snapshot_date)


def _check_devices(cfg: ProfilingConfig) -> None:
    """GPU settings that cannot work on this driver (train, then infer)."""
    from profiling.infer import check_scoring_device
    from profiling.train.launch import distributor_args

    distributor_args(cfg.train)
    check_scoring_device(cfg)


def _session(cfg: ProfilingConfig, verbose: bool, command: str):
    """The Spark session of ``cfg``'s workdir for ``command``, asked for once every argument and
    setting is checked.

    Unless ``--verbose``, under spark-submit (whose log operators read) or in a process that runs a
    session already, what the JVM and everything after it print goes to
    ``<workdir>/logs/<command>-<UTC time>.log`` from here to the end of the command, and Spark's
    progress bars, which would only fill that file, are off.
    """
    from pyspark.sql import SparkSession

    from profiling.console import log_spark_output
    from profiling.spark import build_spark_session, launched_by_spark_submit
    from profiling.workdir import lock_workdir

    if not verbose and not launched_by_spark_submit() and SparkSession.getActiveSession() is None:
        lock_workdir(cfg)  # a workdir in use is refused before a log is opened in it
        log_spark_output(cfg.workdir_path / "logs", command)
        cfg = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"show_progress": False})})
    return build_spark_session(cfg)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the logs to")],
    users: Annotated[int, typer.Option(help="Number of users", min=1)] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    items: Annotated[int, typer.Option(help="Items in the catalogue, as many in each category")] = 1000,
    drift_share: Annotated[float, typer.Option(
        help="Share of users with behaviour whose interests drift to new categories part-way through their history",
        min=0.0, max=1.0)] = 0.2,
) -> None:
    """Write synthetic logs with planted interests (and ground_truth.csv.gz) in the input layout."""
    from profiling.generate import CATEGORIES, generate_logs

    if items < CATEGORIES or items % CATEGORIES:
        nearest = max(CATEGORIES, -(-items // CATEGORIES) * CATEGORIES)
        raise ConfigError(f"--items {items}: expected a multiple of the {CATEGORIES} categories, such as {nearest}")
    counts = generate_logs(out, users=users, seed=seed, items_per_category=items // CATEGORIES,
                           drift_share=drift_share)
    typer.echo(json.dumps({"out": str(out), **counts}))


@app.command()
def ingest(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
           set_: SetOpt = None, input_dir: InputOpt = None, verbose: VerboseOpt = False) -> None:
    """Validate the logs into Delta tables; rejected rows go to the quarantine table."""

    cfg = _config(config, workdir, set_, input_dir)
    date = parse_snapshot_date(snapshot_date)
    _check_inputs(cfg, date)
    from profiling.pipeline import run_ingest
    result = run_ingest(_session(cfg, verbose, "ingest"), cfg, date)
    typer.echo(json.dumps(result.report.to_dict()))


@app.command()
def sequences(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
              set_: SetOpt = None, full_refresh: FullRefreshOpt = False, verbose: VerboseOpt = False) -> None:
    """Build one time-ordered multidimensional event sequence per user: those changes reached since the
    last refresh, or everyone."""

    cfg = _existing_workdir(_config(config, workdir, set_))
    date = parse_snapshot_date(snapshot_date)
    from profiling.pipeline import run_sequences
    result = run_sequences(_session(cfg, verbose, "sequences"), cfg, date, full_refresh)
    typer.echo(json.dumps({"users": result.users, "full_refresh": result.full, "users_ended": result.ended}))


@app.command()
def train(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
          set_: SetOpt = None, verbose: VerboseOpt = False) -> None:
    """Train the encoder with TorchDistributor and register it in MLflow."""
    from profiling.train.launch import distributor_args

    cfg = _existing_workdir(_config(config, workdir, set_))
    date = parse_snapshot_date(snapshot_date)
    distributor_args(cfg.train)
    from profiling.pipeline import run_train
    result = run_train(_session(cfg, verbose, "train"), cfg, date)
    typer.echo(json.dumps({"model_version": result.model_version, "best_epoch": result.best_epoch + 1,
                           "epochs_run": result.epochs_run, "resumed_after_epoch": result.resumed_after_epoch,
                           "metrics": result.metrics}))


@app.command()
def infer(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
          set_: SetOpt = None,
          model_version: Annotated[Optional[str], typer.Option(help="Registered version (default: @current)")] = None,
          full_refresh: FullRefreshOpt = False, verbose: VerboseOpt = False) -> None:
    """Score the users whose sequences were rebuilt since the last run (everyone under a new model version)
    and write the profile tables."""
    from profiling.infer import check_scoring_device
    from profiling.tracking import registered_version

    cfg = _existing_workdir(_config(config, workdir, set_))
    date = parse_snapshot_date(snapshot_date)
    check_scoring_device(cfg)
    version = registered_version(cfg, model_version)
    from profiling.pipeline import run_infer
    result = run_infer(_session(cfg, verbose, "infer"), cfg, date, version, full_refresh)
    typer.echo(json.dumps({"users": result.users, "model_version": result.model_version,
                           "full_refresh": result.full}))


@app.command()
def evaluate(
    config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None, set_: SetOpt = None,
    model_version: Annotated[Optional[str], typer.Option(help="Registered version (default: @current)")] = None,
    ground_truth: Annotated[Optional[Path], typer.Option(help="ground_truth.csv.gz of generated data")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Leave-last-out, full-ranking test metrics of the encoder, most-popular and ALS. Without
    --model-version, a newly trained version awaiting the promotion gate is decided on first."""
    from profiling.tracking import registered_version

    cfg = _existing_workdir(_config(config, workdir, set_))
    date = parse_snapshot_date(snapshot_date)
    if ground_truth is not None and not ground_truth.is_file():
        raise ConfigError(f"--ground-truth {ground_truth} does not exist")
    registered_version(cfg, model_version)  # before Spark starts: a version that is not there is one line
    from profiling.pipeline import run_evaluate
    result = run_evaluate(_session(cfg, verbose, "evaluate"), cfg, date, model_version, ground_truth)
    if json_:
        typer.echo(json.dumps(result.to_dict()))
        return
    if result.promotion is not None:
        typer.echo(result.promotion.line())
    typer.echo(f"{result.dataset}: {result.users_evaluated} users evaluated (test targets, full ranking)")
    keys = list(result.models["profiling"])
    typer.echo(f"{'model':<12}" + "".join(f"{k:>11}" for k in keys))
    for name, metrics in result.models.items():
        figures = "".join(f"{metrics[k]:>11.4f}" for k in keys) if metrics else \
            f"  not measured: {result.missing[name]}"
        typer.echo(f"{name:<12}" + figures)
    cold = result.cold_start or {}
    if cold.get("users"):
        typer.echo(f"cold start, {cold['users']} of {cold['sampled']} sampled users ranked from their preference "
                   "and social events alone:")
        for name in ("profiling", "popularity"):
            typer.echo(f"{name:<12}" + "".join(f"{cold[name][k]:>11.4f}" for k in keys))
    if result.fidelity:
        typer.echo(f"fidelity: {result.fidelity}")


@app.command()
def forget(
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    user: Annotated[Optional[list[str]], typer.Option("--user", help="A user id to forget (repeatable)")] = None,
    users_file: Annotated[Optional[Path], typer.Option(help="A UTF-8 file of user ids, one per line")] = None,
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing", help="Forget the ids found even when others match nothing")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Delete users from every table and MLflow explanation that names them; record the request (VACUUM purges)."""
    from profiling.ids import normalise_id, read_id_file
    from profiling.privacy import forget_users, id_key

    cfg = _existing_workdir(_config(config, workdir, (set_ or []) + ["spark.show_progress=false"]))
    ids = list(user or [])
    if users_file is not None:
        if not users_file.is_file():
            raise ConfigError(f"--users-file {users_file} does not exist")
        ids += read_id_file(users_file)
    if not any(normalise_id(i) for i in ids):
        raise ConfigError("forget: no user ids given (--user ID or --users-file FILE)")
    id_key(cfg)
    result = forget_users(_session(cfg, verbose, "forget"), cfg, ids, allow_missing)
    typer.echo(json.dumps(vars(result)))


@app.command()
def explain(
    user: Annotated[str, typer.Option("--user", help="User id (as in the logs; pseudonymised here if configured)")],
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    snapshot_date: Annotated[Optional[str], typer.Option("--snapshot-date", help="YYYY-MM-DD (default: newest)")] = None,
    format_: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    png: Annotated[Optional[Path], typer.Option(help="Also draw the profile into this PNG file")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Explain one user's profile: interests, their evidence events, weights, nearest users, top items.
    With the embedded catalog it reads the tables with delta-rs: no JVM, no workdir lock."""
    if format_ not in ("text", "json"):
        raise ConfigError(f"--format {format_!r}: expected text or json")
    if png is not None and not png.parent.is_dir():
        raise ConfigError(f"--png {png}: folder {png.parent} does not exist")
    from profiling.explain import explain_users, format_text
    from profiling.privacy import table_user_ids
    from profiling.snapshots import snapshot_reader

    cfg = _existing_workdir(_config(config, workdir, (set_ or []) + ["spark.show_progress=false"]))
    date = parse_snapshot_date(snapshot_date) if snapshot_date else None
    ids = table_user_ids(cfg, [user])
    doc = explain_users(snapshot_reader(cfg, lambda: _session(cfg, verbose, "explain")), cfg, ids, date)[0]
    typer.echo(json.dumps(doc, indent=2) if format_ == "json" else format_text(doc))
    if png is not None:
        from profiling.figures import profile_figure, save_png

        save_png(profile_figure(doc), png)
        log.info("figure written to %s", png)


@app.command()
def promote(
    version: Annotated[str, typer.Option("--version", help="Registered version to make @current")],
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
) -> None:
    """Move @current to a registered version by hand, whatever the promotion gate decided."""
    from profiling.tracking import promote as move_current, registered_version

    cfg = _config(config, workdir, set_)
    registered_version(cfg, version)
    move_current(cfg, version)
    typer.echo(json.dumps({"registered_model": cfg.mlflow.registered_model, "current": version}))


@app.command("current-model")
def current_model(config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None) -> None:
    """Print the registered encoder carrying @current and its age in days (JSON; version null if none)."""
    from profiling.tracking import current_model_age

    typer.echo(json.dumps(current_model_age(_config(config, workdir, set_))))


@app.command()
def run(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
        set_: SetOpt = None, input_dir: InputOpt = None, verbose: VerboseOpt = False) -> None:
    """Run every stage: ingest, sequences, train, the promotion gate, infer."""

    cfg = _config(config, workdir, set_, input_dir)
    date = parse_snapshot_date(snapshot_date)
    _check_inputs(cfg, date)
    _check_devices(cfg)
    from profiling.pipeline import run_pipeline
    result = run_pipeline(_session(cfg, verbose, "run"), cfg, date)
    typer.echo(json.dumps({"mlflow_run_id": result.run_id, "users": result.infer.users,
                           "model_version": result.infer.model_version}))


@app.command()
def demo(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
         set_: SetOpt = None, users: Annotated[int, typer.Option(help="Synthetic users", min=1)] = 2000,
         verbose: VerboseOpt = False) -> None:
    """Generate synthetic logs, run the whole pipeline on them and print a summary (config: conf/demo.yaml)."""
    from profiling import progress
    from profiling.config import DEMO_CONFIG
    from profiling.demo import print_summary
    from profiling.generate import generate_logs
    from profiling.privacy import id_key

    cfg = _config(config or DEMO_CONFIG, workdir, set_)
    date = parse_snapshot_date(snapshot_date)
    id_key(cfg)
    _check_devices(cfg)
    data = cfg.workdir_path / "input"
    with progress.step(f"generating the logs of {users:,} synthetic users in {shown_path(data)}"):
        generate_logs(data, users=users)
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"dir": str(data)})})
    spark = _session(cfg, verbose, "demo")
    from profiling.pipeline import run_pipeline
    result = run_pipeline(spark, cfg, date)
    print_summary(spark, cfg, date, result)


@app.command()
def benchmark(
    dataset: Annotated[Optional[list[str]], typer.Option(help="Folder name under --datasets-dir (repeatable)")] = None,
    datasets_dir: Annotated[Path, typer.Option(help="Where the datasets live")] = Path("../shared/datasets"),
    generated_users: Annotated[int, typer.Option(help="Also benchmark N generated users with fidelity (0: no)",
                                                 min=0)] = 0,
    peers: Annotated[Path, typer.Option(help="Peer figures (RecBole)")] = Path("../shared/benchmarks/peers.json"),
    config: ConfigOpt = None,
    workdir: Annotated[Path, typer.Option(help="One sub-folder per dataset")] = Path("work/benchmark"),
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object per dataset")] = False,
) -> None:
    """Quality benchmark: `run` + `evaluate` per dataset (fresh processes, shipped config), table vs the peers."""
    from profiling.benchmark import benchmark_dataset, format_table, load_peers
    from profiling.generate import generate_logs

    known = load_peers(peers)
    jobs: list[tuple[Path, Path | None]] = []
    for name in dataset or ([] if generated_users else ["ml-100k", "ciaodvd"]):
        folder = datasets_dir / name
        if not (folder / "behaviour.csv.gz").exists() and not any(folder.glob("behaviour*")):
            raise ConfigError(f"--dataset {name}: no behaviour log in {folder}")
        jobs.append((folder, None))
    if generated_users:
        folder = workdir / "inputs" / f"generated-{generated_users}"
        generate_logs(folder, users=generated_users)
        jobs.append((folder, folder / "ground_truth.csv.gz"))
    results = []
    for folder, truth in jobs:
        log.info("benchmark: %s", folder.name)
        result = benchmark_dataset(folder, workdir / folder.name, known, config, truth)
        results.append(result)
        if json_:
            typer.echo(json.dumps(result.to_dict()))
    if not json_:
        typer.echo(format_table(results))


@app.command()
def maintain(
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    retain_days: Annotated[Optional[float], typer.Option(
        help="Days of time travel to keep (default: maintenance.retain_days, 7); 0 keeps the current versions only",
        min=0)] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Compact every table's small files and delete the files no version of the last N days reads."""

    kept = [] if retain_days is None else [f"maintenance.retain_days={retain_days}"]
    cfg = _existing_workdir(_config(config, workdir, (set_ or []) + kept))
    from profiling.pipeline import run_maintain
    result = run_maintain(_session(cfg, verbose, "maintain"), cfg)
    typer.echo(json.dumps(result.to_dict()))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="Spark SQL, e.g. SELECT * FROM profiling.user_interest_weights")],
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    format_: Annotated[str, typer.Option("--format", help="json (one object per row) or table")] = "table",
    limit: Annotated[int, typer.Option(help="Rows shown with --format table", min=1)] = 50,
    verbose: VerboseOpt = False,
) -> None:
    """Run Spark SQL against the profiling catalog."""
    if format_ not in ("json", "table"):
        raise ConfigError(f"--format {format_!r}: expected json or table")
    from pyspark.errors import AnalysisException, ParseException

    cfg = _existing_workdir(_config(config, workdir, (set_ or []) + ["spark.show_progress=false"]))
    spark = _session(cfg, verbose, "sql")
    try:
        df = spark.sql(query)
        if format_ == "json":
            for row in df.toLocalIterator():
                sys.stdout.write(json.dumps(row.asDict(recursive=True), default=str) + "\n")
        else:
            df.show(limit, truncate=80)
    except (AnalysisException, ParseException) as exc:
        raise QueryError(f"SQL: {str(exc).strip().splitlines()[0]}") from None


@app.command("sql-server")
def sql_server(
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    port: Annotated[int, typer.Option(help="Thrift (JDBC) port")] = 10000,
    host: Annotated[str, typer.Option(help="Address to bind: loopback unless --allow-remote")] = "127.0.0.1",
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a non-loopback --host (no TLS: passwords and rows travel in clear)")] = False,
    sql_user: Annotated[Optional[str], typer.Option(
        "--sql-user", help="User name that PROFILING_SQL_PASSWORD logs in (default profiling)")] = None,
    password_file: Annotated[Optional[Path], typer.Option(
        "--password-file", help="File of user:password lines (chmod 600), instead of PROFILING_SQL_PASSWORD")] = None,
) -> None:
    """Serve the catalog read-only over JDBC (Spark's Thrift server) until stopped; clients need a password."""
    from profiling.sql_server import bind_host_warning, compiled_jvm_classes, jdbc_url, serve, sql_credentials

    cfg = _config(config, workdir, set_)
    warning = bind_host_warning(host, allow_remote)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    credentials = sql_credentials(sql_user, password_file)
    jvm_classes = compiled_jvm_classes()
    typer.echo(f"serving {cfg.workdir_path} read-only at {jdbc_url(cfg, port, host)} (stop with Ctrl-C)", err=True)
    serve(cfg, port, host, credentials, jvm_classes)


@config_app.command("show")
def config_show(config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None) -> None:
    """Print the settings a command given these options would run with, each with its origin: default,
    file PATH (following base:), --set or --workdir. Secret-looking values are masked. Starts no Spark."""
    resolved = _resolve(config, workdir, set_)
    values, origins = resolved.config.flat(), resolved.origins()
    key_width = max(map(len, values))
    value_width = min(max(map(len, values.values())), 40)
    for key, value in values.items():
        typer.echo(f"{key:<{key_width}}  {value:<{value_width}}  {origins[key]}")


@config_app.command("defaults")
def config_defaults() -> None:
    """Print every setting with its default and description, as conf/default.yaml holds them (generated:
    `profiling config defaults > conf/default.yaml` after changing a setting in profiling/config.py)."""
    from profiling.config import defaults_yaml

    typer.echo(defaults_yaml(), nl=False)


def _point_to(spark_log: Path | None) -> None:
    if spark_log is not None:
        typer.echo(f"log: {shown_path(spark_log)} (Spark, Ivy, Hive and workers; --verbose shows them here)",
                   err=True)


def main(argv: list[str] | None = None) -> None:
    """Errors a user can fix: one line, exit code 2. Anything else: its stack trace, then one line
    saying what the job was doing, exit code 1. Both last, after the path of the command's log."""
    _setup_logging()
    spark_log = None
    try:
        try:
            app(args=argv, prog_name="profiling", standalone_mode=False)
        finally:
            spark_log = restore_terminal()
        _point_to(spark_log)
    except ProfilingError as exc:
        _point_to(spark_log)
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except typer.TyperException as exc:  # usage errors: unknown option, extra argument, bad value
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # noqa: BLE001 - the last line of an unforeseen failure says where it was
        from profiling.progress import interrupted_step

        traceback.print_exc()
        _point_to(spark_log)
        command = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "")
        doing = interrupted_step()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        typer.echo(f"error: profiling {command} failed unexpectedly{f' while {doing}' if doing else ''}: "
                   f"{type(exc).__name__}: {first}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
