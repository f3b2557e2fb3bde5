"""User privacy: pseudonymous ids at ingest, and the right to be forgotten.

With ``privacy.hash_user_ids`` every user id (``user_id``, ``other_user_id``, and the
same fields inside quarantined raw records) is replaced at ingest by its
HMAC-SHA256 under a key read from the environment variable ``privacy.key_env``;
the same id gets the same pseudonym in all three logs, so joins still hold. The
key travels to the workers inside the UDF, never in a query plan, config or log.

Every table whose contract has a ``user_id`` or ``other_user_id`` column loses the
rows of those users (a social edge goes when either end is forgotten), and the
quarantine loses the raw records that name them. Each delete is one Delta commit
carrying the request id; ``forget_requests`` records the request with keyed
digests (HMAC-SHA256) of the ids, never the ids: an unkeyed hash of a short or
numeric id is reversed by hashing guesses. Deleted rows stay in older Delta files
until ``VACUUM`` removes them (README, "Failure modes": forgetting a user).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import uuid
from dataclasses import dataclass, field

import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError
from profiling.ids import normalised
from profiling.schemas import table, table_contracts
from profiling.tables import commit_metadata, current_version, ensure_table, qualified

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
    """The ids as the tables hold them: pseudonyms when ``privacy.hash_user_ids`` is on."""
    key = id_key(config)
    return [pseudonym(key, u) for u in user_ids] if key else list(user_ids)


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


@dataclass
class ForgetResult:
    request_id: str
    users: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)
    digest_key: str = "none"  # which key the audit digests are under: privacy.key_env, privacy.audit_key_env or none


def _naming(name: str, ids: list[str]) -> Column | None:
    """The condition that picks the rows of table ``name`` naming any of ``ids`` (None: it holds no user)."""
    if name == "quarantine":
        named = [F.coalesce(raw_user_id(c).isin(ids), F.lit(False)) for c in USER_COLUMNS]
        return named[0] | named[1]
    columns = [c for c in USER_COLUMNS if c in table(name).names]
    if not columns:
        return None
    condition = F.col(columns[0]).isin(ids)
    for column in columns[1:]:
        condition = condition | F.col(column).isin(ids)
    return condition


def forget_users(spark: SparkSession, config: ProfilingConfig, user_ids: list[str]) -> ForgetResult:
    """Delete ``user_ids`` from every table of the catalog that holds users; record the request."""
    asked = sorted({u.strip() for u in user_ids if u and u.strip()})
    if not asked:
        raise ConfigError("forget: no user ids given (--user ID or --users-file FILE)")
    ids = table_user_ids(config, asked)
    result = ForgetResult(request_id=f"forget-{uuid.uuid4().hex[:12]}", users=len(ids))
    for name in table_contracts():
        condition = _naming(name, ids)
        full = qualified(config, name)
        if condition is None or not spark.catalog.tableExists(full):
            continue
        with commit_metadata(spark, result.request_id):
            DeltaTable.forName(spark, full).delete(condition)
        last = spark.sql(f"DESCRIBE HISTORY {full} LIMIT 1").first()
        ours = last["operation"] == "DELETE" and last["userMetadata"] == result.request_id
        deleted = int((last["operationMetrics"] or {}).get("numDeletedRows", 0)) if ours else 0
        result.rows_deleted[name] = deleted
        result.table_versions[name] = current_version(spark, full)
        log.info("forget %s: %d rows deleted from %s (version %d)", result.request_id, deleted, full,
                 result.table_versions[name])
    result.digest_key, key = audit_key(config)
    if key is None:
        log.warning("forget_requests records no digests of the ids: no key is configured; set the environment "
                    "variable %s (privacy.audit_key_env) to record keyed (HMAC-SHA256) digests",
                    config.privacy.audit_key_env)
    audit = spark.createDataFrame(
        [(result.request_id, dt.datetime.now(dt.timezone.utc), len(ids), [pseudonym(key, i) for i in ids] if key else [],
          result.digest_key, result.rows_deleted, result.table_versions)],
        table("forget_requests").struct,
    )
    full = ensure_table(spark, config, "forget_requests")
    with commit_metadata(spark, result.request_id):
        audit.writeTo(full).append()
    return result
