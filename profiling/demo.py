"""What ``profiling demo`` prints after its run: counts, validation metrics, a few profiles, SQL to try."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.pipeline import PipelineResult
from profiling.schemas import table_contracts
from profiling.tables import qualified

SQL_HINTS = (
    "SELECT dimension, key, weight FROM profiling.user_interest_weights WHERE user_id = '{user}' ORDER BY dimension, rank",
    "SELECT key AS category, count(*) AS users FROM profiling.user_interest_weights "
    "WHERE dimension = 'category' AND rank = 1 GROUP BY key ORDER BY users DESC",
    "SELECT source, reason_code, count(*) AS n FROM profiling.quarantine GROUP BY source, reason_code",
)


def print_summary(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, result: PipelineResult) -> None:
    print(f"\nprofiling demo: snapshot {snapshot_date}, workdir {config.workdir_path}")
    print(f"MLflow run {result.run_id} in {config.tracking_uri}")
    print(f"registered model {config.mlflow.registered_model} version {result.train.model_version} "
          f"(best epoch {result.train.best_epoch + 1} of {result.train.epochs_run})\n")
    print("rows per table for this snapshot:")
    for name, contract in table_contracts().items():
        full = qualified(config, name)
        if "snapshot_date" not in contract.partitioned_by or not spark.catalog.tableExists(full):
            continue  # e.g. forget_requests: written by `profiling forget`, not by a run
        n = spark.table(full).where(F.col("snapshot_date") == F.lit(snapshot_date)).count()
        print(f"  {full:<42} {n:>10,}")
    print("\nvalidation (full ranking, second-to-last behaviour event):")
    for key in sorted(k for k in result.train.metrics if k.startswith("val_")):
        print(f"  {key[4:]:<12} {result.train.metrics[key]:.4f}")
    weights = spark.table(qualified(config, "user_interest_weights")).where(
        (F.col("snapshot_date") == F.lit(snapshot_date)) & (F.col("dimension") == "category") & (F.col("rank") <= 3)
    )
    users = [r["user_id"] for r in weights.select("user_id").distinct().orderBy("user_id").limit(3).collect()]
    print("\ntop interests (category weights) of three users:")
    for user in users:
        rows = weights.where(F.col("user_id") == user).orderBy("rank").collect()
        print(f"  {user}: " + ", ".join(f"{r['key']} {r['weight']:.2f}" for r in rows))
    workdir = config.workdir_path
    print("\nlook further with SQL:")
    for hint in SQL_HINTS:
        print(f'  profiling sql --workdir {workdir} "{hint.format(user=users[0] if users else "")}"')
    if users:
        print("\nor ask why a user has the interests they have (text, --format json, --png FILE):")
        print(f"  profiling explain --workdir {workdir} --user {users[0]} --png {users[0]}.png")
