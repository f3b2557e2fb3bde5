"""`profiling forget`: a user leaves every current table, the audit keeps no raw id, and no file the
training feed reads holds the id (after VACUUM, none at all: tests/test_forget.py). Pseudonyms: the
cluster's run hashes every user id, and no raw id or key reaches its tables, MLflow or what it printed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from cluster import ID_KEY
from commands import ENV, PROFILING, SMALL_SPARK, delta_table, files_naming, rows_naming, table_frame

USER_TABLES = ["behaviour_events", "preference_events", "social_edges", "quarantine", "user_sequences",
               "user_profile_embeddings", "user_interest_weights", "user_interest_evidence"]


@pytest.fixture(scope="module")
def forgotten(cli_run):
    """The shared CLI workdir, after its `profiling forget --users-file` of one user."""
    return cli_run["workdir"], cli_run["user"], cli_run["before"], cli_run["forget"]


@pytest.mark.jvm
def test_the_user_had_rows_in_every_table_and_each_delete_is_one_commit_naming_no_id(forgotten):
    work, user, _, result = forgotten
    assert all(result["rows_deleted"][t] > 0 for t in USER_TABLES), result["rows_deleted"]
    for t in USER_TABLES:
        history = delta_table(work, t).history()  # later tests on the workdir (test_faults) add commits
        [ours] = [h for h in history if h.get("userMetadata") == result["request_id"]]
        assert (ours["operation"], ours["version"]) == ("MERGE", result["table_versions"][t])
        # DESCRIBE HISTORY is readable by anyone who may read the table: no commit may name the id.
        assert user not in json.dumps(history, default=str)


@pytest.mark.jvm
def test_forget_removes_the_user_from_every_current_table(forgotten):
    work, user, _, result = forgotten
    assert {t: int(rows_naming(table_frame(work, t), t, user).sum()) for t in USER_TABLES} == {t: 0 for t in USER_TABLES}
    audit = table_frame(work, "forget_requests")
    assert len(audit) == 1 and audit["request_id"].iloc[0] == result["request_id"] and audit["users"].iloc[0] == 1
    assert user not in audit.to_json()  # digests only


@pytest.mark.jvm
def test_the_training_feed_reads_no_file_that_holds_the_user(forgotten):
    """Training reads the parquet files of the table's version directly: with deletion vectors a file
    would still hold the deleted rows. The tables keep them off, so a forget rewrites the files."""
    work, user, before, _ = forgotten
    table = delta_table(work, "user_sequences")
    assert any("/user_sequences/" in path for path in before), "the user had no sequence: nothing to check"
    assert "deletionVectors" not in (table.protocol().writer_features or [])
    read = {os.path.realpath(uri) for uri in table.file_uris()}
    assert read and not read & {os.path.realpath(p) for p in before}
    assert set(files_naming(work / "warehouse" / "profiling.db" / "user_sequences", user)) == {
        p for p in before if "/user_sequences/" in p}  # only the replaced files, which VACUUM deletes


@pytest.fixture(scope="module")
def pseudonymous(cluster_run):
    """The cluster's pipeline run (tests/cluster.py), which hashes user ids; returns (workdir, raw user ids,
    what its driver and executors printed)."""
    return cluster_run["workdir"], cluster_run["users"], cluster_run["printed"]


@pytest.mark.jvm
def test_ids_are_replaced_by_the_same_keyed_hash_in_every_log(pseudonymous):
    from profiling.privacy import pseudonym

    work, users, _ = pseudonymous
    expected = {pseudonym(ID_KEY.encode(), u) for u in users}
    seen = set()
    for name, columns in {"behaviour_events": ["user_id"], "preference_events": ["user_id"],
                          "social_edges": ["user_id", "other_user_id"],
                          "user_profile_embeddings": ["user_id"]}.items():
        frame = table_frame(work, name)
        for column in columns:
            values = set(frame[column])
            assert values <= expected, f"{name}.{column} holds ids that are not pseudonyms"
            seen |= values
    assert seen == expected  # every user, under one pseudonym across the logs


@pytest.mark.jvm
def test_no_raw_id_or_key_reaches_tables_mlflow_or_logs(pseudonymous):
    from mlflow import MlflowClient

    work, users, printed = pseudonymous
    assert ID_KEY not in printed
    leaked = [u for u in users if u in printed]
    assert leaked == []
    for user in users[:5]:
        assert files_naming(work / "warehouse", user) == []
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("profiling").experiment_id])
    assert len(runs) == 5  # the pipeline and its four stages
    text = json.dumps([[r.data.params, r.data.tags, sorted(r.data.metrics)] for r in runs])
    assert "privacy.hash_user_ids" in text and ID_KEY not in text
    assert [u for u in users if f'"{u}"' in text or f" {u}" in text] == []
    # the sample explanations of the infer run name users (and their neighbours) by pseudonym only
    explanations = sorted((work / "mlartifacts").rglob("explain/sample_user_*.json"))
    assert explanations
    text = " ".join(p.read_text() for p in explanations)
    assert [u for u in users if f'"{u}"' in text] == [] and ID_KEY not in text


@pytest.mark.jvm
def test_explain_takes_a_raw_id_and_shows_its_pseudonym(pseudonymous):
    from profiling.privacy import pseudonym

    work, users, _ = pseudonymous
    proc = subprocess.run([PROFILING, "explain", "--workdir", str(work), "--user", users[1], "--format", "json",
                           "--set", "privacy.hash_user_ids=true"],
                          capture_output=True, text=True, timeout=900, env={**ENV, "PROFILING_ID_KEY": ID_KEY})
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["user_id"] == pseudonym(ID_KEY.encode(), users[1])
    assert users[1] not in proc.stdout + proc.stderr


@pytest.mark.jvm
def test_forget_takes_raw_ids_and_finds_their_pseudonyms(pseudonymous):
    from profiling.privacy import pseudonym

    work, users, _ = pseudonymous
    explanations = " ".join(p.read_text() for p in (work / "mlartifacts").rglob("explain/sample_user_*.json"))
    user = next(u for u in users if pseudonym(ID_KEY.encode(), u) in explanations)  # a sample user or a neighbour
    proc = subprocess.run([PROFILING, "forget", "--workdir", str(work), "--user", user,
                           "--set", "privacy.hash_user_ids=true", *SMALL_SPARK],
                          capture_output=True, text=True, timeout=900, env={**ENV, "PROFILING_ID_KEY": ID_KEY})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["rows_deleted"]["user_profile_embeddings"] == 1
    assert result["artifacts_deleted"] + result["artifacts_rewritten"] > 0 and result["digest_key"] == "privacy.key_env"
    explanations = " ".join(p.read_text() for p in (work / "mlartifacts").rglob("explain/sample_user_*.json"))
    assert pseudonym(ID_KEY.encode(), user) not in explanations
    assert ID_KEY not in proc.stdout + proc.stderr


def test_hashing_without_a_key_is_a_one_line_config_error(tmp_path):
    proc = subprocess.run([PROFILING, "ingest", "--workdir", str(tmp_path), "--input", str(tmp_path),
                           "--set", "privacy.hash_user_ids=true"],
                          capture_output=True, text=True, timeout=600, env={**ENV, "PROFILING_ID_KEY": ""})
    assert proc.returncode == 2
    assert "PROFILING_ID_KEY" in proc.stderr and "Traceback" not in proc.stderr
