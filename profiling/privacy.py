"""User privacy: pseudonymous ids at ingest, and the right to be forgotten.

With ``privacy.hash_user_ids`` every user id (``user_id``, ``other_user_id``, and the
same fields inside quarantined raw records) is replaced at ingest by its
HMAC-SHA256 under a key read from the environment variable ``privacy.key_env``;
the same id gets the same pseudonym in all three logs, so joins still hold. The
key travels to the workers inside the UDF, never in a query plan, config or log.

Every table whose contract has a ``user_id`` or ``other_user_id`` column loses the
rows of those users (a social edge goes when either end is forgotten), and the
quarantine loses the raw records that name them. Each delete is one Delta commit
carrying the request id. The MLflow runs' sample explanations lose them too: their
own is deleted, other users' no longer list them as neighbours. ``forget_requests``
records the request with keyed digests (HMAC-SHA256) of the ids, never the ids: an
unkeyed hash of a short or numeric id is reversed by hashing guesses. Deleted rows
stay in older Delta files until ``VACUUM`` removes them (docs/operations.md,
"Forgetting a user").
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import operator
import os
import uuid
from dataclasses import dataclass

import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError, ProfilingError
from profiling.ids import normalise_id, normalised
from profiling.schemas import table, table_contracts
from profiling.tables import commit_metadata, conform, current_version, ensure_table, qualified

log = logging.getLogger(__name__)

USER_COLUMNS = ("user_id", "other_user_id")


def id_key(config: ProfilingConfig) -> bytes | None:
    """The pseudonymisation key (None when ids are kept as they are)."""
    if not config.privacy.hash_user_ids:
        return None
    value = os.environ.get(config.privacy.key_env, "")
    if not value:
        raise ConfigError(f"privacy.hash_user_ids is true but the environment variable {config.privacy.key_env} "
                          "(privacy.key_env) is not set or empty")
    return value.encode()


def raw_user_id(column: str) -> Column:
    """A user id field of ``raw_record``, normalised as ingest normalises ids."""
    return normalised(F.get_json_object("raw_record", f"$.{column}"))


def pseudonym(key: bytes, user_id: str) -> str:
    """HMAC-SHA256 of an id under ``key``, in hex: the pseudonym ingest stores, and the digest the audit keeps."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def table_user_ids(config: ProfilingConfig, user_ids: list[str]) -> list[str]:
    """The ids as the tables hold them: normalised as ingest does, then pseudonyms when ``privacy.hash_user_ids`` is on."""
    key = id_key(config)
    ids = [normalise_id(u) for u in user_ids]
    return [pseudonym(key, u) for u in ids] if key else ids


def audit_key(config: ProfilingConfig) -> tuple[str, bytes | None]:
    """The key of ``forget_requests``' digests, with the setting that names it (``("none", None)``: no key).

    Pseudonymised ids are digested under the pseudonymisation key; plain ids under the key in
    ``privacy.audit_key_env``, which the data never sees.
    """
    key = id_key(config)
    if key:
        return "privacy.key_env", key
    value = os.environ.get(config.privacy.audit_key_env, "")
    return ("privacy.audit_key_env", value.encode()) if value else ("none", None)


def pseudonymise(checked: DataFrame, columns: list[str], key: bytes) -> DataFrame:
    """``columns`` and the same fields of ``raw_record`` replaced by their keyed hash (blanks kept)."""
    @F.pandas_udf("string")
    def hashed(ids: pd.Series) -> pd.Series:
        return ids.map(lambda v: v if v is None or v == "" else pseudonym(key, v))

    raw = {c: hashed(raw_user_id(c)) for c in columns}
    out = checked.withColumns({**{c: hashed(F.col(c)) for c in columns}, **{f"__raw_{c}": v for c, v in raw.items()}})

    def swap(k: Column, v: Column) -> Column:
        value = v
        for c in columns:
            value = F.when(k == c, F.col(f"__raw_{c}")).otherwise(value)
        return value

    record = F.to_json(F.transform_values(F.from_json("raw_record", "map<string,string>"), swap))
    return out.withColumn("raw_record", record).drop(*[f"__raw_{c}" for c in columns])


class UnknownUsers(ProfilingError, LookupError):
    """Ids asked to be forgotten that no table holds; the request deleted nothing."""


@dataclass
class ForgetResult:
    """What one request did; ``profiling forget`` prints it as one JSON object."""

    request_id: str
    users: int
    missing: list[str]  # ids asked for that no table holds (forgotten anyway only with allow_missing)
    rows_deleted_per_user: dict[str, dict[str, int]]  # id as asked -> table -> rows naming it
    rows_deleted: dict[str, int]  # table -> rows deleted by its one commit
    table_versions: dict[str, int]
    artifacts_deleted: int  # MLflow sample explanation files of forgotten users
    artifacts_rewritten: int  # other users' explanation files that listed them as neighbours
    digest_key: str  # which key the audit digests are under: privacy.key_env, privacy.audit_key_env or none


def _user_values(name: str) -> list[Column]:
    """The values of a row of table ``name`` that are user ids (none: the table holds no user)."""
    if name == "quarantine":
        return [raw_user_id(c) for c in USER_COLUMNS]
    return [F.col(c) for c in USER_COLUMNS if c in table(name).names]


def _naming(values: list[Column], ids: list[str]) -> Column:
    """The condition that picks the rows naming any of ``ids`` in any of ``values``."""
    return functools.reduce(operator.or_, [v.isin(ids) for v in values])


def _rows_naming(spark: SparkSession, full: str, values: list[Column], ids: list[str]) -> dict[str, int]:
    """Rows of table ``full`` naming each of ``ids`` (an edge between two of them counts for both)."""
    named = F.array_distinct(F.filter(F.array(*values), lambda v: v.isin(ids)))
    counts = spark.table(full).where(_naming(values, ids)).select(F.explode(named).alias("id")).groupBy("id").count()
    return {r["id"]: r["count"] for r in counts.collect()}


def _delete_naming(spark: SparkSession, full: str, name: str, values: list[Column], ids: list[str],
                   request_id: str) -> int:
    """Delete the rows of ``full`` naming ``ids`` in one commit; returns how many went.

    A DELETE would record its condition, ids and all, in the Delta history that DESCRIBE HISTORY shows
    to anyone who may read the table. A MERGE against the doomed rows' own keys (their user columns;
    the raw record, in the quarantine) records column names only.
    """
    keys = ["raw_record"] if name == "quarantine" else [c for c in USER_COLUMNS if c in table(name).names]
    doomed = spark.table(full).where(_naming(values, ids)).select(*keys).distinct()
    matches = functools.reduce(operator.and_, [F.col(f"t.{k}").eqNullSafe(F.col(f"s.{k}")) for k in keys])
    with commit_metadata(spark, request_id):
        DeltaTable.forName(spark, full).alias("t").merge(doomed.alias("s"), matches).whenMatchedDelete().execute()
    last = spark.sql(f"DESCRIBE HISTORY {full} LIMIT 1").first()
    ours = last["operation"] == "MERGE" and last["userMetadata"] == request_id
    return int((last["operationMetrics"] or {}).get("numTargetRowsDeleted", 0)) if ours else 0


def forget_users(
    spark: SparkSession, config: ProfilingConfig, user_ids: list[str], allow_missing: bool = False
) -> ForgetResult:
    """Delete ``user_ids`` from every table that holds users and from the runs' sample explanations; record it.

    The rows naming each id are counted first: ids that match nothing in any table stop the request
    before anything is deleted (a mistyped id must not pass for a forgotten one), unless ``allow_missing``.
    """
    from profiling.explain import remove_users_from_logged_explanations

    asked = sorted({normalise_id(u) for u in user_ids} - {""})
    if not asked:
        raise ConfigError("forget: no user ids given (--user ID or --users-file FILE)")
    ids = table_user_ids(config, asked)
    tables = {}
    for name in table_contracts():
        full, values = qualified(config, name), _user_values(name)
        if values and spark.catalog.tableExists(full):
            tables[name] = (full, values)
    found = {name: _rows_naming(spark, full, values, ids) for name, (full, values) in tables.items()}
    per_user = {u: {name: found[name].get(i, 0) for name in tables} for u, i in zip(asked, ids)}
    missing = [u for u in asked if not any(per_user[u].values())]
    if missing and not allow_missing:
        raise UnknownUsers(f"forget: {len(missing)} of {len(asked)} ids match nothing in any table of "
                           f"{config.catalog.database}: {', '.join(repr(u) for u in missing)}; nothing was deleted "
                           "(check the ids, or pass --allow-missing to forget the others)")
    request_id = f"forget-{uuid.uuid4().hex[:12]}"
    rows_deleted, table_versions = {}, {}
    for name, (full, values) in tables.items():
        deleted = 0
        if found[name]:
            deleted = _delete_naming(spark, full, name, values, ids, request_id)
        rows_deleted[name] = deleted
        table_versions[name] = current_version(spark, full)
        log.info("forget %s: %d rows deleted from %s (version %d)", request_id, deleted, full, table_versions[name])
    artifacts_deleted, artifacts_rewritten = remove_users_from_logged_explanations(config, ids)
    log.info("forget %s: %d MLflow artifacts deleted, %d rewritten", request_id, artifacts_deleted,
             artifacts_rewritten)
    digest_key, key = audit_key(config)
    if key is None:
        log.warning("forget_requests records no digests of the ids: no key is configured; set the environment "
                    "variable %s (privacy.audit_key_env) to record keyed (HMAC-SHA256) digests",
                    config.privacy.audit_key_env)
    result = ForgetResult(request_id, len(asked), missing, per_user, rows_deleted, table_versions,
                          artifacts_deleted, artifacts_rewritten, digest_key)
    audit = spark.createDataFrame(
        [(request_id, dt.datetime.now(dt.timezone.utc), len(asked), [pseudonym(key, i) for i in ids] if key else [],
          digest_key, rows_deleted, table_versions)],
        table("forget_requests").struct,
    )
    full = ensure_table(spark, config, "forget_requests")
    with commit_metadata(spark, request_id):
        _drop_unkeyed_digests(spark, full)
        audit.writeTo(full).append()
    return result


UNKEYED_DIGESTS = "user_id_sha256"  # the audit column of workdirs made before digests were keyed


def _drop_unkeyed_digests(spark: SparkSession, full: str) -> None:
    """Rewrite an audit table of an older workdir without its unkeyed SHA-256 digests (a dictionary
    reverses them): its requests are kept, marked as having no digest."""
    old = spark.table(full)
    if UNKEYED_DIGESTS not in old.columns:
        return
    kept = old.drop(UNKEYED_DIGESTS).withColumns({
        "user_id_hmac": F.coalesce("user_id_hmac", F.array().cast("array<string>")),
        "digest_key": F.coalesce("digest_key", F.lit(f"none ({UNKEYED_DIGESTS} dropped)")),
    })
    conform(kept, "forget_requests").localCheckpoint().write.format("delta").mode("overwrite") \
        .option("overwriteSchema", "true").saveAsTable(full)
    log.warning("%s: dropped the column %s (unkeyed digests of forgotten ids) from %d earlier request(s)",
                full, UNKEYED_DIGESTS, kept.count())
