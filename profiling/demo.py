"""What ``profiling demo`` prints after its run: counts, validation metrics, a few profiles, SQL to try."""

from __future__ import annotations

import datetime as dt
import shlex

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.console import profiling_command, shown_path
from profiling.pipeline import PipelineResult
from profiling.schemas import table_contracts
from profiling.tables import qualified

SQL_HINTS = (
    "SELECT horizon, dimension, key, weight FROM profiling.user_interest_weights WHERE user_id = '{user}' "
    "ORDER BY horizon DESC, dimension, rank",
    "SELECT key AS category, count(*) AS users FROM profiling.user_interest_weights "
    "WHERE horizon = 'short' AND dimension = 'category' AND rank = 1 GROUP BY key ORDER BY users DESC",
    "SELECT source, reason_code, count(*) AS n FROM profiling.quarantine GROUP BY source, reason_code",
)


def print_summary(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, result: PipelineResult) -> None:
    """A screenful at most: the progress lines above it hold the stages' own counts."""
    workdir = shlex.quote(shown_path(config.workdir_path))
    db = config.catalog.database
    print(f"\nprofiling demo: snapshot {snapshot_date} in {workdir}, MLflow store {config.tracking_uri}")
    counts = []
    for name, contract in table_contracts().items():
        full = qualified(config, name)
        if "snapshot_date" not in contract.partitioned_by or not spark.catalog.tableExists(full):
            continue  # e.g. forget_requests: written by `profiling forget`, not by a run
        counts.append(f"{name} {spark.table(full).where(F.col('snapshot_date') == F.lit(snapshot_date)).count():,}")
    lines = [f"rows of the snapshot in {db}:"]
    for count in counts:  # a table's name and count stay on one line
        if len(lines[-1]) + len(count) > 116:
            lines.append(" ")
        lines[-1] += f" {count},"
    print("\n".join(lines).rstrip(","))
    print("validation (full ranking):", ", ".join(
        name + " ".join(f"@{k} {result.train.metrics[f'val_{name}@{k}']:.4f}" for k in config.train.eval_k)
        for name in ("ndcg", "recall")))
    weights = spark.table(qualified(config, "user_interest_weights")).where(
        (F.col("snapshot_date") == F.lit(snapshot_date)) & (F.col("dimension") == "category") & (F.col("rank") <= 3)
    )
    users = [r["user_id"] for r in weights.select("user_id").distinct().orderBy("user_id").limit(3).collect()]
    for i, user in enumerate(users):
        rows = weights.where(F.col("user_id") == user).orderBy("rank").collect()
        now, ever = (", ".join(f"{r['key']} {r['weight']:.2f}" for r in rows if r["horizon"] == h)
                     for h in ("short", "long"))
        print(("top interests (category weights): " if i == 0 else "  ") + f"{user} now {now}; over time {ever}")
    command = profiling_command()
    print("look further (SQL; explain: why a user has these interests, also --format json):")
    for hint in SQL_HINTS:
        print(f'  {command} sql --workdir {workdir} "{hint.format(user=users[0] if users else "")}"')
    if users:
        print(f"  {command} explain --workdir {workdir} --user {users[0]} --png {users[0]}.png")
