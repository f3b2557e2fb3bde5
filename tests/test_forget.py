"""`forget` in-process, on a pipeline run of its own (database `forgetting`, MLflow store and artifacts in
a temporary workdir): ids are matched exactly as ingest stores them, ids that match nothing stop the
request, the runs' sample explanations forget the user too, the audit keeps keyed digests only, and after
a maintain with no retention no data file holds a forgotten id (a forget rewrites files; VACUUM deletes
the old ones)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml

from commands import delta_table, files_naming, rows_naming, table_frame

SNAPSHOT = dt.date(2026, 11, 1)
DATABASE = "forgetting"
AUDIT_ENV = "PROFILING_AUDIT_KEY"
AUDIT_KEY = "test-only-audit-key-93b0"
USER_TABLES = ["behaviour_events", "preference_events", "social_edges", "quarantine", "user_sequences",
               "user_profile_embeddings", "user_interest_weights", "user_interest_evidence"]
# Generated users renamed (by their position among users with behaviour): ids that differ from
# another id only by characters str.strip() takes for spaces or str.splitlines() for line ends.
PLANTED = {"bob": 10, "bob\u00a0": 11, "alice": 12, "carol": 13, "alice\u0085carol": 14, "dave": 15, "erin": 16}


def _plant_users(folder: Path) -> None:
    """Rename generated users to PLANTED in every log, and quarantine one row each of bob and bob\\u00a0."""
    behaviour = pd.read_csv(folder / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    active = list(dict.fromkeys(behaviour["user_id"]))
    names = {active[i]: name for name, i in PLANTED.items()}
    for log, columns in {"behaviour": ["user_id"], "preference": ["user_id"],
                         "social": ["user_id", "other_user_id"]}.items():
        frame = pd.read_csv(folder / f"{log}.csv.gz", dtype=str, keep_default_na=False)
        for column in columns:
            frame[column] = frame[column].replace(names)
        if log == "behaviour":
            bad = frame[frame["user_id"].isin(["bob", "bob\u00a0"])].groupby("user_id").head(1).assign(value="NaN")
            frame = pd.concat([frame, bad])
        frame.to_csv(folder / f"{log}.csv.gz", index=False, compression="gzip")


@pytest.fixture(scope="module")
def forgetting(spark, config, tmp_path_factory):
    """A config of its own (database, workdir: MLflow store, artifacts, checkpoints), after a pipeline run
    and a second infer run, so that the sample explanations live in two runs."""
    from profiling.generate import generate_logs
    from profiling.pipeline import run_infer, run_pipeline

    root = tmp_path_factory.mktemp("forgetting")
    data, work = root / "input", root / "work"
    generate_logs(data, users=60, seed=23)
    _plant_users(data)
    work.mkdir()
    cfg = config.model_copy(update={
        "workdir": str(work),
        "input": config.input.model_copy(update={"dir": str(data)}),
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
        "model": config.model.model_copy(update={"dim": 16}),
        "train": config.train.model_copy(update={"epochs": 1, "num_processes": 1}),  # forget needs a model, not DDP
    })
    run_pipeline(spark, cfg, SNAPSHOT)
    run_infer(spark, cfg, SNAPSHOT)
    return cfg


def _table(work: Path, name: str) -> pd.DataFrame:
    """A table of this module's database in the shared session's warehouse (under ``work``), read with
    delta-rs: no Spark job per check."""
    return table_frame(work, name, DATABASE)


def _rows_naming(work: Path, user: str) -> dict[str, int]:
    return {name: int(rows_naming(_table(work, name), name, user).sum()) for name in USER_TABLES}


def _versions(work: Path) -> dict[str, int]:
    return {name: delta_table(work, name, DATABASE).version() for name in USER_TABLES}


def _audit_rows(work: Path) -> list[dict]:
    return [{**row, "user_id_hmac": list(row["user_id_hmac"])}
            for row in _table(work, "forget_requests").to_dict("records")]


def _digest(user: str) -> str:
    return hmac.new(AUDIT_KEY.encode(), user.encode(), hashlib.sha256).hexdigest()


def _assert_audit_names_no_id(work: Path, users: list[str]) -> None:
    """No raw id, and no unkeyed SHA-256 of one, anywhere in the audit table."""
    values = [str(v) for row in _audit_rows(work) for v in [*row.values(), *row["user_id_hmac"]]]
    for user in users:
        unkeyed = hashlib.sha256(user.encode()).hexdigest()
        assert not [v for v in values if user in v or unkeyed in v], user


def test_an_id_with_a_unicode_space_is_another_user(forgetting, spark, config, monkeypatch):
    from profiling.privacy import forget_users

    monkeypatch.setenv(AUDIT_ENV, AUDIT_KEY)
    bob, nbsp_bob = _rows_naming(config.workdir_path, "bob"), _rows_naming(config.workdir_path, "bob\u00a0")
    assert bob["behaviour_events"] and bob["quarantine"] and nbsp_bob["behaviour_events"] and nbsp_bob["quarantine"]
    result = forget_users(spark, forgetting, ["bob\u00a0"])
    assert result.rows_deleted_per_user == {"bob\u00a0": nbsp_bob}
    assert _rows_naming(config.workdir_path, "bob\u00a0") == dict.fromkeys(USER_TABLES, 0)
    assert _rows_naming(config.workdir_path, "bob") == bob
    audit = next(r for r in _audit_rows(config.workdir_path) if r["request_id"] == result.request_id)
    assert (audit["user_id_hmac"], audit["digest_key"]) == ([_digest("bob\u00a0")], "privacy.audit_key_env")
    _assert_audit_names_no_id(config.workdir_path, ["bob\u00a0", "bob"])


def test_a_users_file_line_is_one_id_whatever_unicode_line_break_it_holds(forgetting, spark, config, tmp_path,
                                                                          monkeypatch):
    from profiling.ids import read_id_file
    from profiling.privacy import forget_users

    monkeypatch.setenv(AUDIT_ENV, AUDIT_KEY)
    alice, carol = _rows_naming(config.workdir_path, "alice"), _rows_naming(config.workdir_path, "carol")
    assert alice["behaviour_events"] and carol["behaviour_events"]
    ids = tmp_path / "ids.txt"
    ids.write_bytes("alice\u0085carol\r\n\r\n".encode())
    result = forget_users(spark, forgetting, read_id_file(ids))
    assert list(result.rows_deleted_per_user) == ["alice\u0085carol"] and result.missing == []
    assert _rows_naming(config.workdir_path, "alice\u0085carol") == dict.fromkeys(USER_TABLES, 0)
    assert (_rows_naming(config.workdir_path, "alice"), _rows_naming(config.workdir_path, "carol")) == (alice, carol)


def test_ids_that_match_nothing_stop_the_request_before_anything_is_deleted(forgetting, spark, config, monkeypatch):
    from profiling.privacy import UnknownUsers, forget_users

    monkeypatch.setenv(AUDIT_ENV, AUDIT_KEY)
    dave, versions = _rows_naming(config.workdir_path, "dave"), _versions(config.workdir_path)
    assert dave["behaviour_events"]
    with pytest.raises(UnknownUsers) as raised:
        forget_users(spark, forgetting, ["dave", "nobody", "dave\u00a0"])
    assert "2 of 3 ids match nothing" in str(raised.value)
    assert "'nobody'" in str(raised.value) and "'dave\\xa0'" in str(raised.value) and "\n" not in str(raised.value)
    assert (_rows_naming(config.workdir_path, "dave"), _versions(config.workdir_path)) == (dave, versions)
    result = forget_users(spark, forgetting, ["dave", "nobody"], allow_missing=True)
    assert result.missing == ["nobody"]
    assert result.rows_deleted_per_user == {"dave": dave, "nobody": dict.fromkeys(USER_TABLES, 0)}
    assert _rows_naming(config.workdir_path, "dave") == dict.fromkeys(USER_TABLES, 0)


def test_the_cli_says_so_in_one_line_and_exit_2(forgetting, config, tmp_path, capsys):
    """In this process (the shared session's JVM and workdir), in this module's database."""
    from commands import run_main

    conf = tmp_path / "shared.yaml"
    conf.write_text(yaml.safe_dump(config.model_dump()))
    code, err = run_main(capsys, "forget", "--config", str(conf), "--set", f"catalog.database={DATABASE}",
                         "--user", "nobody", "--user", "dave\u00a0")
    assert (code, err) == (2, [
        "error: forget: 2 of 2 ids match nothing in any table of forgetting: 'dave\\xa0', 'nobody'; nothing was "
        "deleted (check the ids, or pass --allow-missing to forget the others)"])


def _artifacts_naming(folder: Path, user: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and user.encode() in p.read_bytes()]


def test_forget_reaches_the_sample_explanations_of_every_run(forgetting, spark, monkeypatch):
    from profiling.privacy import forget_users

    monkeypatch.setenv(AUDIT_ENV, AUDIT_KEY)
    artifacts = forgetting.workdir_path / "mlartifacts"
    docs = {p: json.loads(p.read_text()) for p in sorted(artifacts.rglob("explain/sample_user_*.json"))}
    assert len({p.parents[2] for p in docs}) == 2  # the pipeline's infer run and the second one
    samples = {d["user_id"] for d in docs.values()}
    sample = next(u for u in sorted(samples) if u not in PLANTED)
    neighbour = next(n["user_id"] for d in docs.values() if d["user_id"] != sample for n in d["nearest_users"]
                     if n["user_id"] not in samples | set(PLANTED))
    forgotten = {sample, neighbour}
    own = [p for p, d in docs.items() if d["user_id"] in forgotten]
    listing = [p for p, d in docs.items()
               if d["user_id"] not in forgotten and {n["user_id"] for n in d["nearest_users"]} & forgotten]
    assert len(own) == 2 and listing and _artifacts_naming(artifacts, sample) and _artifacts_naming(artifacts, neighbour)
    result = forget_users(spark, forgetting, [sample, neighbour])
    assert _artifacts_naming(artifacts, sample) == [] and _artifacts_naming(artifacts, neighbour) == []
    assert [p for p in own if p.exists() or p.with_suffix(".png").exists()] == []
    for path in listing:
        assert json.loads(path.read_text()) == {
            **docs[path], "nearest_users": [n for n in docs[path]["nearest_users"] if n["user_id"] not in forgotten]}
        assert path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert (result.artifacts_deleted, result.artifacts_rewritten) == (2 * len(own), 2 * len(listing))


def test_without_an_audit_key_no_digest_is_kept_and_forget_warns(forgetting, spark, config, monkeypatch, caplog):
    from profiling.privacy import forget_users

    monkeypatch.delenv(AUDIT_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="profiling.privacy"):
        result = forget_users(spark, forgetting, ["erin"])
    audit = next(r for r in _audit_rows(config.workdir_path) if r["request_id"] == result.request_id)
    assert (audit["user_id_hmac"], audit["digest_key"], result.digest_key) == ([], "none", "none")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and AUDIT_ENV in warnings[0] and "\n" not in warnings[0]
    _assert_audit_names_no_id(config.workdir_path, ["erin"])


def test_after_maintain_with_no_retention_no_data_file_holds_a_forgotten_user(forgetting, spark, config):
    """Last in this module: the forgets above left the files they replaced, each still naming its user."""
    from profiling.pipeline import run_maintain
    from profiling.tables import table_dir

    tables = table_dir(config.workdir_path, DATABASE, "behaviour_events").parent
    forgotten = ["bob\u00a0", "dave", "erin"]
    before = {user: files_naming(tables, user) for user in forgotten}
    assert all(before.values()), before  # nothing to check otherwise
    result = run_maintain(spark, forgetting, retain_days=0)
    assert result.retain_days == 0 and result.totals()["files_deleted"] >= len({f for fs in before.values() for f in fs})
    assert {user: files_naming(tables, user) for user in forgotten} == {user: [] for user in forgotten}
    assert files_naming(tables, "bob")  # a user nobody forgot keeps their rows
