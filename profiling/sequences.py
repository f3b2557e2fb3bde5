"""Sequences stage: one time-ordered, multidimensional event sequence per user.

Each event carries an item, a category, an event type, the log it came from,
a preference attribute, a time-gap bucket and a value bucket. Behaviour events
come from the behaviour log, preference events from the preference log, and
the social log contributes the user's circle: the items most common among the
user's neighbours (both edge directions), as context events placed before the
user's own events. All of it is Spark (windows and ``collect_list``), nothing
loops on the driver.

Order: ``ts`` ascending with unknown ``ts`` first, then social context, then
preference, then behaviour, then the snapshot that first ingested the row, then
input file order (``event_order``), so same-second ties keep the order in which
the rows arrived, whether a day's log held its new rows only or repeated the
earlier ones too.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.ingest import complete_ingest_id
from profiling.model.inputs import GAP_BUCKETS, GAP_UNKNOWN, PAD, UNKNOWN, VALUE_BUCKETS
from profiling.refresh import LOGS, REFRESHES, end_absent, plan_refresh
from profiling.tables import TableVersion, current_version, read_snapshot, write_snapshot

log = logging.getLogger(__name__)

SOURCES = ("social", "preference", "behaviour")  # order = tie-break rank at equal ts
DIMENSIONS = ("item", "category", "event_type", "source", "attribute")
# A user is evaluated (test target: the last behaviour event, validation: the one before) only with
# at least this many behaviour events, so that one is left to learn from.
MIN_BEHAVIOUR_EVENTS = 3


@dataclass
class SequencesResult:
    users: int  # rebuilt: written to the date's partition
    full: bool = True  # every user rebuilt, or those changes reached (profiling.refresh)
    ended: int = 0  # users in no log any more, their earlier rows ended
    read: list[TableVersion] = field(default_factory=list)
    written: list[TableVersion] = field(default_factory=list)


def gap_bucket(gap: F.Column) -> F.Column:
    """1 unknown, 2 same second, then one bucket per power of two seconds."""
    return (
        F.when(gap.isNull() | (gap < 0), F.lit(GAP_UNKNOWN))
        .when(gap == 0, F.lit(2))
        .otherwise(F.lit(3) + F.least(F.floor(F.log2(gap.cast("double"))).cast("int"), F.lit(GAP_BUCKETS - 4)))
    )


def value_bucket(value: F.Column) -> F.Column:
    """1 none, 2-12 the integers 0-10 (ratings, counts), 13-30 powers of two above 10, 31 negative."""
    return (
        F.when(value.isNull(), F.lit(1))
        .when(value < 0, F.lit(VALUE_BUCKETS - 1))
        .when(value <= 10, F.lit(2) + F.round(value).cast("int"))
        .otherwise(F.lit(13) + F.least(F.floor(F.log2(value)).cast("int") - 3, F.lit(VALUE_BUCKETS - 15)))
    )


def _behaviour_events(behaviour: DataFrame, items: DataFrame) -> DataFrame:
    """Behaviour rows as events: the row's category, else its item's."""
    item_category = items.select("item_id", F.col("category").alias("item_category")).dropDuplicates(["item_id"])
    return (
        behaviour.join(item_category, "item_id", "left")
        .select(
            "user_id",
            "item_id",
            F.coalesce("category", "item_category").alias("category"),
            "event_type",
            F.lit("behaviour").alias("source"),
            F.lit(None).cast("string").alias("attribute"),
            "value",
            "ts",
            F.col("snapshot_date").alias("first_seen"),
            "event_order",
        )
    )


def lent_items(behaviour_events: DataFrame, m: int) -> DataFrame:
    """(user_id, item_id, category, first_ts) of the items each user lends the circles they are in: their
    ``m`` most frequent (at least one), ties by item id."""
    per_item = behaviour_events.groupBy("user_id", "item_id").agg(
        F.count("*").alias("n"), F.min("category").alias("category"), F.min("ts").alias("first_ts"),
    )
    return per_item.withColumn(
        "r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("n"), "item_id"))
    ).where(F.col("r") <= max(m, 1)).select("user_id", "item_id", "category", "first_ts")


def _events(config: ProfilingConfig, logs: dict[str, DataFrame], only: DataFrame | None = None
            ) -> tuple[DataFrame, DataFrame]:
    """All events of all users in one frame, plus the set of users; of the users ``only`` holds (ids) if
    given: their rows, their edges and their neighbours' behaviour (for their circle)."""
    behaviour, preference, social, items = (logs[n] for n in LOGS)
    if only is not None:
        ids = only.select("user_id")
        social = social.join(ids, "user_id", "left_semi").unionByName(
            social.join(ids.withColumnRenamed("user_id", "other_user_id"), "other_user_id", "left_semi")).distinct()
        circle_ids = ids.union(social.select("user_id")).union(social.select(F.col("other_user_id").alias("user_id")))
        behaviour = behaviour.join(circle_ids.distinct(), "user_id", "left_semi")
        preference = preference.join(ids, "user_id", "left_semi")

    behaviour_events = _behaviour_events(behaviour, items)
    category_dims = [d.lower() for d in config.sequences.category_dimensions]
    preference_events = preference.select(
        "user_id",
        F.lit(None).cast("string").alias("item_id"),
        F.when(F.lower("dimension").isin(category_dims), F.col("key")).alias("category"),
        F.concat(F.lit("preference:"), F.col("dimension")).alias("event_type"),
        F.lit("preference").alias("source"),
        F.concat_ws("=", "dimension", "key").alias("attribute"),
        "value",
        "ts",
        F.col("snapshot_date").alias("first_seen"),
        "event_order",
    )

    # The circle: neighbours in either direction; each neighbour contributes its
    # own most frequent items (capped first, so a popular user cannot explode the join).
    # Only items a neighbour had before the user's last behaviour event count, so the
    # circle never reveals what the user did last (the test target) from the future.
    m = config.sequences.social_context_items
    # Ties (two relations to one neighbour, two categories of one item) go to the smallest, so the
    # sequence is the same whichever order the rows come in (a daily refresh equals a full one).
    neighbours = social.select("user_id", F.col("other_user_id").alias("neighbour"), "relation").unionByName(
        social.select(F.col("other_user_id").alias("user_id"), F.col("user_id").alias("neighbour"), "relation")
    ).groupBy("user_id", "neighbour").agg(F.min("relation").alias("relation"))
    cutoff = behaviour.groupBy("user_id").agg(F.max("ts").alias("cutoff"))
    circle = (
        neighbours.join(lent_items(behaviour_events, m).withColumnRenamed("user_id", "neighbour"), "neighbour")
        .join(cutoff, "user_id", "left")
        .where(F.col("cutoff").isNull() | (F.col("first_ts") < F.col("cutoff")))
        .groupBy("user_id", "item_id")
        .agg(F.count("*").alias("friends"), F.min("category").alias("category"),
             F.min("relation").alias("relation"))
    )
    social_events = (
        circle.withColumn("r", F.row_number().over(
            Window.partitionBy("user_id").orderBy(F.desc("friends"), "item_id")))
        .where(F.col("r") <= m)
        .select(
            "user_id",
            "item_id",
            "category",
            F.concat(F.lit("social:"), F.col("relation")).alias("event_type"),
            F.lit("social").alias("source"),
            F.lit(None).cast("string").alias("attribute"),
            F.col("friends").cast("double").alias("value"),
            F.lit(None).cast("bigint").alias("ts"),
            F.lit(None).cast("date").alias("first_seen"),
            (-F.col("r")).cast("bigint").alias("event_order"),
        )
    )
    events = (
        behaviour_events.unionByName(preference_events).unionByName(social_events).withColumnRenamed("item_id", "item")
    )
    users = (
        behaviour.select("user_id")
        .union(preference.select("user_id"))
        .union(social.select("user_id"))
        .union(social.select(F.col("other_user_id").alias("user_id")))
        .distinct()
    )
    if only is not None:  # the neighbours' rows served their circles only
        events, users = events.join(ids, "user_id", "left_semi"), users.join(ids, "user_id", "left_semi")
    return events, users


def _key_counts(events: DataFrame) -> DataFrame:
    """(dimension, key, count) of the events' tokens."""
    long = events.select(
        F.explode(F.array(*[
            F.struct(F.lit(d).alias("dimension"), F.col(d).cast("string").alias("key")) for d in DIMENSIONS
        ])).alias("t")
    ).select("t.*").where(F.col("key").isNotNull())
    return long.groupBy("dimension", "key").agg(F.count("*").alias("count"))


def build_vocabularies(events: DataFrame) -> DataFrame:
    """(dimension, key, idx, count): 0 is padding, 1 unknown/none, then by frequency, ties by key."""
    ranked = _key_counts(events).withColumn(
        "idx", (F.row_number().over(Window.partitionBy("dimension").orderBy(F.desc("count"), "key")) + 1).cast("int")
    )
    specials = events.sparkSession.createDataFrame(
        [(d, k, i, 0) for d in DIMENSIONS for k, i in (("<pad>", PAD), ("<none>", UNKNOWN))],
        "dimension string, key string, idx int, count bigint",
    )
    return ranked.select("dimension", "key", "idx", "count").unionByName(specials)


def extend_vocabularies(previous: DataFrame, events: DataFrame) -> DataFrame:
    """``previous`` (a daily refresh's: the vocabulary of the refresh it continues) with the events' new
    keys appended after its indices, by frequency, ties by key: every index it gave keeps its key, so
    the sequences of earlier partitions still read through the new vocabulary."""
    new = _key_counts(events).join(previous.select("dimension", "key"), ["dimension", "key"], "left_anti")
    last = previous.groupBy("dimension").agg(F.max("idx").alias("last"))
    appended = new.join(last, "dimension", "left").withColumn("idx", (
        F.coalesce("last", F.lit(UNKNOWN))
        + F.row_number().over(Window.partitionBy("dimension").orderBy(F.desc("count"), "key"))).cast("int"))
    return previous.select("dimension", "key", "idx", "count").unionByName(
        appended.select("dimension", "key", "idx", "count"))


def _index(events: DataFrame, vocab: DataFrame) -> DataFrame:
    out = events
    for d in DIMENSIONS:
        lookup = vocab.where(F.col("dimension") == d).select(F.col("key").alias(d), F.col("idx").alias(f"{d}_idx"))
        if d != "item":
            lookup = F.broadcast(lookup)
        out = out.join(lookup, d, "left").withColumn(f"{d}_idx", F.coalesce(f"{d}_idx", F.lit(UNKNOWN)))
    return out


def assemble_sequences(indexed: DataFrame, users: DataFrame, max_len: int, behaviour_idx: int) -> DataFrame:
    """Keep each user's last ``max_len`` events and pack them into ordered arrays."""
    source_rank = F.when(F.col("source") == "social", 0).when(F.col("source") == "preference", 1).otherwise(2)
    order = [F.coalesce("ts", F.lit(-1)), source_rank, "first_seen", "event_order"]
    latest_first = Window.partitionBy("user_id").orderBy(*[o.desc() if isinstance(o, F.Column) else F.desc(o)
                                                           for o in order])
    kept = indexed.withColumn("recency", F.row_number().over(latest_first)).where(F.col("recency") <= max_len)
    in_time = Window.partitionBy("user_id").orderBy(F.desc("recency"))
    kept = kept.withColumn("gap", F.col("ts") - F.lag("ts").over(in_time))
    packed = kept.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct(
            (-F.col("recency")).alias("pos"),
            F.col("item_idx").alias("item"),
            F.col("category_idx").alias("category"),
            F.col("event_type_idx").alias("event_type"),
            F.col("source_idx").alias("source"),
            F.col("attribute_idx").alias("attribute"),
            gap_bucket(F.col("gap")).alias("gap_bucket"),
            value_bucket(F.col("value")).alias("value_bucket"),
            F.coalesce("ts", F.lit(0)).alias("ts"),
        ))).alias("ev")
    )
    fields = ["item", "category", "event_type", "source", "attribute", "gap_bucket", "value_bucket", "ts"]
    seq = packed.select("user_id", *[F.col("ev").getField(f).alias(f) for f in fields])
    behaviour_positions = F.filter(
        F.sequence(F.lit(0), F.size("source") - 1), lambda i: F.col("source")[i] == F.lit(behaviour_idx)
    )
    seq = seq.withColumn("bpos", behaviour_positions).select(
        *[F.col(f) for f in ["user_id", *fields]],
        F.size("item").alias("length"),
        F.size("bpos").alias("n_behaviour"),
        F.when(F.size("bpos") >= MIN_BEHAVIOUR_EVENTS, F.element_at("bpos", -2)).otherwise(-1).alias("valid_pos"),
        F.when(F.size("bpos") >= MIN_BEHAVIOUR_EVENTS, F.element_at("bpos", -1)).otherwise(-1).alias("test_pos"),
    )
    empty_int = F.array().cast("array<int>")
    return users.join(seq, "user_id", "left").select(
        "user_id",
        *[F.coalesce(f, empty_int if f != "ts" else F.array().cast("array<bigint>")).alias(f) for f in fields],
        *[F.coalesce(c, F.lit(d)).alias(c) for c, d in
          (("length", 0), ("n_behaviour", 0), ("valid_pos", -1), ("test_pos", -1))],
    )


LONG_TERM_DIMENSIONS = ("category", "event_type", "source")
LONG_TERM_TYPE = "array<struct<dimension:string,rank:int,key:string,weight:double>>"


def long_term_weights(events: DataFrame, half_life_days: float | None) -> DataFrame:
    """(user_id, long_term_weights): per user, every event they ever had (not only the ``max_len`` kept)
    counted ``2^(-days older than their newest dated event / half_life_days)`` (undated ones as the newest:
    ``profiling.decay``'s rule), summed per category, event type and source and normalised to 1 per
    dimension, ranked. Category weights count the user's own events, the circle's only for users with no
    categorised event of their own, as the short-term weights do (``profiling.infer``)."""
    per_user = Window.partitionBy("user_id")
    newest = F.max(F.when(F.col("ts") > 0, F.col("ts"))).over(per_user)
    factor = F.lit(1.0) if half_life_days is None else F.coalesce(
        F.pow(F.lit(2.0), -(newest - F.col("ts")) / F.lit(86_400.0 * half_life_days)), F.lit(1.0))
    own_category = (F.col("source") != "social") & F.col("category").isNotNull()
    weighted = events.select(
        "user_id", "category", "event_type", "source", factor.alias("factor"),
        F.max(own_category.cast("int")).over(per_user).alias("has_own"), own_category.alias("own"))
    keyed = weighted.select("user_id", "factor", F.explode(F.array(
        F.struct(F.lit("category").alias("dimension"), F.when(F.col("own") | (F.col("has_own") == 0),
                                                              F.col("category")).alias("key")),
        *[F.struct(F.lit(d).alias("dimension"), F.col(d).alias("key")) for d in LONG_TERM_DIMENSIONS[1:]],
    )).alias("t")).select("user_id", "t.dimension", "t.key", "factor").where(F.col("key").isNotNull())
    sums = keyed.groupBy("user_id", "dimension", "key").agg(F.sum("factor").alias("mass"))
    per_dimension = Window.partitionBy("user_id", "dimension")
    ranked = sums.select(
        "user_id", "dimension", "key", (F.col("mass") / F.sum("mass").over(per_dimension)).alias("weight"),
        F.row_number().over(per_dimension.orderBy(F.desc("mass"), "key")).cast("int").alias("rank"))
    return ranked.groupBy("user_id").agg(F.sort_array(F.collect_list(
        F.struct("dimension", "rank", "key", "weight"))).alias("long_term_weights"))


def build_user_sequences(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, run_id: str | None = None,
    full_refresh: bool = False,
) -> SequencesResult:
    """Write ``vocabularies`` and ``user_sequences`` for ``snapshot_date`` (from a whole ingest run only):
    the users changes reached since the last refresh, or everyone (profiling.refresh)."""
    complete_ingest_id(spark, config, snapshot_date)
    logs, read = {}, {}
    for name in LOGS:
        logs[name], read[name] = read_snapshot(spark, config, name, snapshot_date)
    m = config.sequences.social_context_items
    refresh = plan_refresh(spark, config, snapshot_date, read, logs,
                           lambda rows: lent_items(_behaviour_events(rows, logs["items"]), m), full_refresh)
    events, users = _events(config, logs, refresh.users)
    events = events.persist()
    if refresh.full:
        vocab = build_vocabularies(events)
    else:
        previous, _ = read_snapshot(spark, config, "vocabularies", refresh.since)
        vocab = extend_vocabularies(previous, events)
    vocab = vocab.persist()
    v_vocab = write_snapshot(spark, config, "vocabularies", vocab, snapshot_date, run_id)
    behaviour_idx = vocab.where((F.col("dimension") == "source") & (F.col("key") == "behaviour")).select("idx").first()
    sequences = assemble_sequences(
        _index(events, vocab), users, config.sequences.max_len, behaviour_idx["idx"] if behaviour_idx else -1
    ).join(long_term_weights(events, config.profile.long_half_life_days), "user_id", "left").withColumn(
        "long_term_weights", F.coalesce("long_term_weights", F.array().cast(LONG_TERM_TYPE))
    ).withColumn("removed_on", F.lit(None).cast("date")).repartition(
        max(config.spark.shuffle_partitions, config.train.num_processes * 2), "user_id"
    ).sortWithinPartitions("user_id")  # training reads rows in file order: one order, whatever the plan upstream
    v_seq = write_snapshot(spark, config, "user_sequences", sequences, snapshot_date, run_id)
    written = spark.sql(f"SELECT user_id FROM {v_seq.name} VERSION AS OF {v_seq.version} "
                        f"WHERE snapshot_date = '{snapshot_date}'")
    users_written = written.count()
    ended = end_absent(spark, config, "user_sequences", written, snapshot_date, refresh.users, run_id)
    if ended:
        v_seq = TableVersion(v_seq.name, current_version(spark, v_seq.name))
    events.unpersist()
    vocab.unpersist()
    if refresh.users is not None:
        refresh.users.unpersist()
    record = spark.createDataFrame(
        [(refresh.full, refresh.reason, {n: v.version for n, v in read.items()}, users_written, ended)],
        "full boolean, reason string, log_versions map<string,bigint>, users bigint, ended bigint",
    ).withColumn("refreshed_at", F.current_timestamp())
    v_refresh = write_snapshot(spark, config, REFRESHES, record, snapshot_date, run_id)
    log.info("user_sequences: %d users rebuilt for %s (%s refresh: %s)", users_written, snapshot_date,
             "full" if refresh.full else "daily", refresh.reason)
    return SequencesResult(users=users_written, full=refresh.full, ended=ended, read=list(read.values()),
                           written=[v_vocab, v_seq, v_refresh])
