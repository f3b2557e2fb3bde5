"""Daily refresh: which users a day's changes reach, and the end of users no log holds any more.

``user_sequences`` and the profile tables are refreshed per user (``newest_partition_per: [user_id]``
in ``schemas/tables.yaml``): partition D holds the users the run of D rebuilt, and the snapshot D of
such a table is each user's newest row up to D. A daily refresh rebuilds the users its changes reach:

- the users of every log row that changed since the last refresh, read from the logs' change data
  feed (``readChangeFeed`` from the versions the last refresh recorded in ``sequence_refreshes``),
  plus the rows of partitions after its date or ended after it (a later date ingested before it ran);
- the users with behaviour on an item whose metadata changed;
- the circle of every user whose behaviour changed what they lend it: a user's sequence holds the
  items most common among their neighbours' most frequent ones, so a neighbour's new events reach it
  only when they change that neighbour's top items (compared with the snapshot the last refresh read).

A full refresh rebuilds everyone: the first run, ``--full-refresh``, a date before the newest refresh
(a backfill), a rerun of a full refresh, and a change feed that cannot be read for the range (a log
written before it had one, or vacuumed since). A user rebuilt into no row (gone from every log) has
the rows of earlier partitions ended (``removed_on``), so snapshots from then on leave them out and
earlier ones keep them.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.schemas import table
from profiling.tables import TableVersion, commit_metadata, qualified

log = logging.getLogger(__name__)

REFRESHES = "sequence_refreshes"
LOGS = ("behaviour_events", "preference_events", "social_edges", "items")


@dataclass(frozen=True)
class Refresh:
    """Which users a sequences run rebuilds: all (``full``) or ``users``, the ids changes reached."""

    full: bool
    reason: str
    since: dt.date | None = None  # the refresh this one continues
    users: DataFrame | None = None  # one column, user_id (None: everyone)


def _last_refreshes(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date) -> tuple:
    """(the refresh of ``snapshot_date`` if any, the newest one before it, the newest date of all)."""
    full = qualified(config, REFRESHES)
    if not spark.catalog.tableExists(full):
        return None, None, None
    rows = spark.table(full).select("snapshot_date", "full", "log_versions").collect()
    before = [r for r in rows if r["snapshot_date"] < snapshot_date]
    same = next((r for r in rows if r["snapshot_date"] == snapshot_date), None)
    return (same, max(before, key=lambda r: r["snapshot_date"]) if before else None,
            max((r["snapshot_date"] for r in rows), default=None))


def changed_rows(spark: SparkSession, full_name: str, since_version: int, version: int, since: dt.date,
                 snapshot_date: dt.date) -> DataFrame:
    """Rows of log ``full_name`` that changed after ``since_version`` up to ``version`` (inserted, updated
    or deleted: its change data feed), and at ``version`` the rows of its partitions after ``since`` up to
    ``snapshot_date`` or ended after ``since``: an ingest of a later date that ran before the refresh of
    ``since`` wrote rows its versions already held, which a snapshot reads only from their date on."""
    pinned = spark.sql(f"SELECT * FROM {full_name} VERSION AS OF {version}")
    after = F.col("snapshot_date") > F.lit(since)
    if "removed_on" in pinned.columns:  # and rows ended after it (file statistics skip the files of none)
        after = after | (F.col("removed_on") > F.lit(since))
    later = pinned.where(after & (F.col("snapshot_date") <= F.lit(snapshot_date)))
    if since_version >= version:
        return later
    feed = (spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", since_version + 1).option("endingVersion", version).table(full_name))
    return later.unionByName(feed.select(*pinned.columns))


def plan_refresh(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date,
                 read: dict[str, TableVersion], logs: dict[str, DataFrame],
                 lent_items: Callable[[DataFrame], DataFrame], full_refresh: bool = False) -> Refresh:
    """The users the sequences run of ``snapshot_date`` rebuilds. ``read``: the version of each log it
    reads; ``logs``: their snapshots; ``lent_items``: the items behaviour rows make a user lend their
    circle (a circle is rebuilt only when what a neighbour lends it changed)."""
    same, previous, newest = _last_refreshes(spark, config, snapshot_date)
    if full_refresh:
        return Refresh(True, "--full-refresh")
    if previous is None:
        return Refresh(True, "no earlier refresh")
    if newest > snapshot_date:
        return Refresh(True, f"a date before the newest refresh ({newest})")
    if same is not None and same["full"]:
        return Refresh(True, "a rerun of a full refresh")
    since, versions = previous["snapshot_date"], previous["log_versions"]
    try:  # the ids alone, without the plan that found them (the build joins them several times)
        users = _reached(spark, read, versions, logs, lent_items, since, snapshot_date).localCheckpoint(eager=True)
        reached = users.count()
    # No change data for the range (Delta names the versions), or its files are gone: VACUUM deletes change
    # data older than its retention, and Spark reports the missing file as a bare JVM error.
    except (PySparkException, Py4JJavaError) as exc:
        cause = exc.java_exception if isinstance(exc, Py4JJavaError) else exc  # its first line says "calling oNN"
        first_line = str(cause).strip().splitlines()[0][:300]
        log.warning("sequences %s: full refresh, the logs' changes since the refresh of %s cannot be read: %s",
                    snapshot_date, since, first_line)
        return Refresh(True, f"no change data feed since the refresh of {since}")
    log.info("sequences %s: %d users reached by changes since the refresh of %s", snapshot_date, reached, since)
    return Refresh(False, f"changes since the refresh of {since}", since, users)


def _reached(spark: SparkSession, read: dict[str, TableVersion], versions: dict, logs: dict[str, DataFrame],
             lent_items: Callable[[DataFrame], DataFrame], since: dt.date, snapshot_date: dt.date) -> DataFrame:
    """User ids whose sequence the changes since the refresh of ``since`` (which read the logs at
    ``versions``) reach: their own rows, and the circles of users whose lent items changed."""
    changes = {name: changed_rows(spark, read[name].name, int(versions.get(name, -1)), read[name].version,
                                  since, snapshot_date) for name in LOGS}
    own = functools.reduce(DataFrame.union, [
        changes["behaviour_events"].select("user_id"),
        changes["preference_events"].select("user_id"),
        changes["social_edges"].select("user_id"),
        changes["social_edges"].select(F.col("other_user_id").alias("user_id")),
    ])
    behaviour, social = logs["behaviour_events"], logs["social_edges"]
    # Users with behaviour on an item whose metadata changed: their categories (and what they lend) may.
    by_items = behaviour.join(changes["items"].select("item_id"), "item_id", "left_semi").select("user_id")
    behaved = changes["behaviour_events"].select("user_id").distinct()
    name = read["behaviour_events"].name
    before = spark.sql(table("behaviour_events").snapshot_sql(
        f"{name} VERSION AS OF {int(versions.get('behaviour_events', -1))}", f"DATE'{since}'"))
    lent_before = lent_items(before.join(behaved, "user_id", "left_semi"))
    lent_now = lent_items(behaviour.join(behaved, "user_id", "left_semi"))
    lenders = (lent_before.exceptAll(lent_now).union(lent_now.exceptAll(lent_before)).select("user_id")
               .union(by_items).distinct())
    circle = social.join(lenders, "user_id", "left_semi").select(F.col("other_user_id").alias("user_id")).union(
        social.join(lenders.withColumnRenamed("user_id", "other_user_id"), "other_user_id", "left_semi")
        .select("user_id"))
    return own.union(by_items).union(circle).distinct()


def end_absent(spark: SparkSession, config: ProfilingConfig, name: str, present: DataFrame,
               snapshot_date: dt.date, candidates: DataFrame | None = None, run_id: str | None = None) -> int:
    """End (``removed_on = snapshot_date``) the rows of earlier partitions of refreshed table ``name`` whose
    user is not in ``present`` (the users written to partition ``snapshot_date``): among ``candidates``
    (user ids), or every user the table holds (a full refresh). Returns how many users it ended."""
    full = qualified(config, name)
    live = spark.table(full).where((F.col("snapshot_date") < F.lit(snapshot_date)) & F.col("removed_on").isNull())
    pool = candidates if candidates is not None else live.select("user_id")
    gone = (pool.distinct().join(present.select("user_id"), "user_id", "left_anti")
            .join(live.select("user_id"), "user_id", "left_semi").distinct()
            .withColumn("removed_on", F.lit(snapshot_date)))
    gone = gone.persist()
    count = end_users(spark, config, name, gone, run_id)
    gone.unpersist()
    return count


def end_users(spark: SparkSession, config: ProfilingConfig, name: str, ended: DataFrame,
              run_id: str | None = None) -> int:
    """Set ``removed_on`` of the live rows of table ``name`` that ``ended`` (user_id, removed_on) ends: of
    partitions before its date. One MERGE, none when nothing ends. Returns the users ``ended`` holds."""
    from delta.tables import DeltaTable

    count = ended.count()
    if count:
        with commit_metadata(spark, run_id):
            done = (DeltaTable.forName(spark, qualified(config, name)).alias("t")
                    .merge(ended.alias("s"), "t.user_id = s.user_id")
                    .whenMatchedUpdate("t.removed_on IS NULL AND t.snapshot_date < s.removed_on",
                                       {"removed_on": "s.removed_on"})
                    .execute().first())
        log.info("%s: %d rows of %d users no log holds any more ended", name, done["num_updated_rows"], count)
    return count
