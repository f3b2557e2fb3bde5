"""The ``profiling`` command: one subcommand per stage, plus run, demo, generate and sql.

Parses arguments, loads and validates the config once, builds the session and
calls the library. Errors a user can fix (config, input, missing stage output)
print one line and exit 2 instead of a stack trace.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from profiling.config import ProfilingConfig, load_config, parse_overrides, parse_snapshot_date
from profiling.exceptions import ConfigError, ProfilingError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Batch user profiles from behaviour, preference and social logs on Spark.")
log = logging.getLogger("profiling")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default conf/default.yaml)")]
WorkdirOpt = Annotated[Optional[Path], typer.Option(help="Folder for tables, catalog, MLflow store, checkpoints")]
DateOpt = Annotated[Optional[str], typer.Option("--snapshot-date", help="YYYY-MM-DD (default: today, UTC)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.epochs=5")]
InputOpt = Annotated[Optional[Path], typer.Option("--input", help="Folder with behaviour/preference/social/items logs")]


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for noisy in ("py4j", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config(config: Path | None, workdir: Path | None, sets: list[str] | None, input_dir: Path | None = None):
    overrides = parse_overrides(sets)
    if workdir is not None:
        overrides["workdir"] = str(workdir)
    if input_dir is not None:
        overrides.setdefault("input", {})["dir"] = str(input_dir)
    return load_config(config, overrides)


def _session(cfg: ProfilingConfig):
    from profiling.spark import build_spark_session

    return build_spark_session(cfg)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the logs to")],
    users: Annotated[int, typer.Option(help="Number of users")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
) -> None:
    """Write synthetic logs with planted interests (and ground_truth.csv.gz) in the input layout."""
    from profiling.generate import generate_logs

    counts = generate_logs(out, users=users, seed=seed)
    typer.echo(json.dumps({"out": str(out), **counts}))


@app.command()
def ingest(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
           set_: SetOpt = None, input_dir: InputOpt = None) -> None:
    """Validate the logs into Delta tables; rejected rows go to the quarantine table."""
    from profiling.pipeline import run_ingest

    cfg = _config(config, workdir, set_, input_dir)
    result = run_ingest(_session(cfg), cfg, parse_snapshot_date(snapshot_date))
    typer.echo(json.dumps({s: vars(c) for s, c in result.counts.items()}))


@app.command()
def sequences(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
              set_: SetOpt = None) -> None:
    """Build one time-ordered multidimensional event sequence per user."""
    from profiling.pipeline import run_sequences

    cfg = _config(config, workdir, set_)
    result = run_sequences(_session(cfg), cfg, parse_snapshot_date(snapshot_date))
    typer.echo(json.dumps({"users": result.users}))


@app.command()
def train(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
          set_: SetOpt = None) -> None:
    """Train the encoder with TorchDistributor and register it in MLflow."""
    from profiling.pipeline import run_train

    cfg = _config(config, workdir, set_)
    result = run_train(_session(cfg), cfg, parse_snapshot_date(snapshot_date))
    typer.echo(json.dumps({"model_version": result.model_version, "best_epoch": result.best_epoch + 1,
                           "epochs_run": result.epochs_run, "resumed_after_epoch": result.resumed_after_epoch,
                           "metrics": result.metrics}))


@app.command()
def infer(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
          set_: SetOpt = None,
          model_version: Annotated[Optional[str], typer.Option(help="Registered version (default: @current)")] = None
          ) -> None:
    """Score every user and write the profile tables."""
    from profiling.pipeline import run_infer

    cfg = _config(config, workdir, set_)
    result = run_infer(_session(cfg), cfg, parse_snapshot_date(snapshot_date), model_version)
    typer.echo(json.dumps({"users": result.users, "model_version": result.model_version}))


@app.command()
def evaluate(
    config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None, set_: SetOpt = None,
    model_version: Annotated[Optional[str], typer.Option(help="Registered version (default: @current)")] = None,
    ground_truth: Annotated[Optional[Path], typer.Option(help="ground_truth.csv.gz of generated data")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Leave-last-out, full-ranking test metrics of the encoder, most-popular and ALS."""
    from profiling.pipeline import run_evaluate

    cfg = _config(config, workdir, set_)
    result = run_evaluate(_session(cfg), cfg, parse_snapshot_date(snapshot_date), model_version, ground_truth)
    if json_:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(f"{result.dataset}: {result.users_evaluated} users evaluated (test targets, full ranking)")
    keys = list(next(iter(result.models.values())))
    typer.echo(f"{'model':<12}" + "".join(f"{k:>11}" for k in keys))
    for name, metrics in result.models.items():
        typer.echo(f"{name:<12}" + "".join(f"{metrics[k]:>11.4f}" for k in keys))
    if result.fidelity:
        typer.echo(f"fidelity: {result.fidelity}")


@app.command()
def forget(
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    user: Annotated[Optional[list[str]], typer.Option("--user", help="A user id to forget (repeatable)")] = None,
    users_file: Annotated[Optional[Path], typer.Option(help="A file of user ids, one per line")] = None,
) -> None:
    """Delete users from every table that holds them and record the request (run VACUUM to purge files)."""
    from profiling.privacy import forget_users

    cfg = _config(config, workdir, set_)
    ids = list(user or [])
    if users_file is not None:
        if not users_file.is_file():
            raise ConfigError(f"--users-file {users_file} does not exist")
        ids += users_file.read_text().splitlines()
    result = forget_users(_session(cfg), cfg, ids)
    typer.echo(json.dumps(vars(result)))


@app.command()
def explain(
    user: Annotated[str, typer.Option("--user", help="User id (as in the logs; pseudonymised here if configured)")],
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    snapshot_date: Annotated[Optional[str], typer.Option("--snapshot-date", help="YYYY-MM-DD (default: newest)")] = None,
    format_: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    png: Annotated[Optional[Path], typer.Option(help="Also draw the profile into this PNG file")] = None,
) -> None:
    """Explain one user's profile: interests, their evidence events, weights, nearest users, top items."""
    from profiling.explain import explain_users, format_text
    from profiling.privacy import table_user_ids

    if format_ not in ("text", "json"):
        raise ConfigError(f"--format {format_!r}: expected text or json")
    if png is not None and not png.parent.is_dir():
        raise ConfigError(f"--png {png}: folder {png.parent} does not exist")
    cfg = _config(config, workdir, (set_ or []) + ["spark.show_progress=false"])
    date = parse_snapshot_date(snapshot_date) if snapshot_date else None
    doc = explain_users(_session(cfg), cfg, table_user_ids(cfg, [user]), date)[0]
    typer.echo(json.dumps(doc, indent=2) if format_ == "json" else format_text(doc))
    if png is not None:
        from profiling.figures import profile_figure, save_png

        save_png(profile_figure(doc), png)
        typer.echo(f"figure written to {png}", err=True)


@app.command("current-model")
def current_model(config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None) -> None:
    """Print the registered encoder carrying @current and its age in days (JSON; version null if none)."""
    from profiling.tracking import current_model_age

    typer.echo(json.dumps(current_model_age(_config(config, workdir, set_))))


@app.command()
def run(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
        set_: SetOpt = None, input_dir: InputOpt = None) -> None:
    """Run every stage: ingest, sequences, train, infer."""
    from profiling.pipeline import run_pipeline

    cfg = _config(config, workdir, set_, input_dir)
    result = run_pipeline(_session(cfg), cfg, parse_snapshot_date(snapshot_date))
    typer.echo(json.dumps({"mlflow_run_id": result.run_id, "users": result.infer.users,
                           "model_version": result.infer.model_version}))


@app.command()
def demo(config: ConfigOpt = None, workdir: WorkdirOpt = None, snapshot_date: DateOpt = None,
         set_: SetOpt = None, users: Annotated[int, typer.Option(help="Synthetic users")] = 2000) -> None:
    """Generate synthetic logs, run the whole pipeline on them and print a summary (config: conf/demo.yaml)."""
    from profiling.config import DEMO_CONFIG
    from profiling.demo import print_summary
    from profiling.generate import generate_logs
    from profiling.pipeline import run_pipeline

    cfg = _config(config or DEMO_CONFIG, workdir, set_)
    data = cfg.workdir_path / "input"
    generate_logs(data, users=users)
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"dir": str(data)})})
    spark = _session(cfg)
    date = parse_snapshot_date(snapshot_date)
    result = run_pipeline(spark, cfg, date)
    print_summary(spark, cfg, date, result)


@app.command()
def benchmark(
    dataset: Annotated[Optional[list[str]], typer.Option(help="Folder name under --datasets-dir (repeatable)")] = None,
    datasets_dir: Annotated[Path, typer.Option(help="Where the datasets live")] = Path("../shared/datasets"),
    generated_users: Annotated[int, typer.Option(help="Also benchmark N generated users with fidelity (0: no)")] = 0,
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
def sql(
    query: Annotated[str, typer.Argument(help="Spark SQL, e.g. SELECT * FROM profiling.user_interest_weights")],
    config: ConfigOpt = None, workdir: WorkdirOpt = None, set_: SetOpt = None,
    format_: Annotated[str, typer.Option("--format", help="json (one object per row) or table")] = "table",
    limit: Annotated[int, typer.Option(help="Rows shown with --format table")] = 50,
) -> None:
    """Run Spark SQL against the profiling catalog."""
    if format_ not in ("json", "table"):
        raise ConfigError(f"--format {format_!r}: expected json or table")
    cfg = _config(config, workdir, (set_ or []) + ["spark.show_progress=false"])
    df = _session(cfg).sql(query)
    if format_ == "json":
        for row in df.toLocalIterator():
            sys.stdout.write(json.dumps(row.asDict(recursive=True), default=str) + "\n")
    else:
        df.show(limit, truncate=80)


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


def main(argv: list[str] | None = None) -> None:
    _setup_logging()
    try:
        app(args=argv, prog_name="profiling", standalone_mode=False)
    except ProfilingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except typer.TyperException as exc:  # usage errors: unknown option, extra argument, bad value
        exc.show()
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
