"""How a session finds Delta's jars: Maven resolution once, then the jar files it gave."""

from __future__ import annotations

import threading
from urllib.parse import urlparse

from profiling.spark import delta_package, first_resolution, resolved_delta_jars


def test_a_recorded_resolution_is_used_only_while_every_jar_is_still_there(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolved_delta_jars() is None  # nothing recorded: resolve
    jars = [tmp_path / "io.delta_delta-spark.jar", tmp_path / "io.delta_delta-storage.jar"]
    for jar in jars:
        jar.write_bytes(b"PK")
    record = tmp_path / "cache" / "profiling" / f"{delta_package().replace(':', '_')}.jars"
    record.parent.mkdir(parents=True)
    record.write_text("".join(f"{jar.as_uri()}\n" for jar in jars))
    assert resolved_delta_jars() == ",".join(jar.as_uri() for jar in jars)
    jars[1].unlink()  # an Ivy cache cleaned since: resolve again
    assert resolved_delta_jars() is None


def test_first_starts_resolve_one_at_a_time_and_the_others_take_the_record(tmp_path, monkeypatch):
    """Ivy's cache takes one downloader at a time: a start that finds no record waits for the one
    resolving, then uses what it recorded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    jar = tmp_path / "io.delta_delta-spark.jar"
    jar.write_bytes(b"PK")
    seen: list = []

    def second_start():
        with first_resolution() as found:
            seen.append(found)

    with first_resolution() as found:  # this start resolves
        assert found is None
        waiting = threading.Thread(target=second_start)
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and seen == []  # still waiting on the lock
        record = tmp_path / "cache" / "profiling" / f"{delta_package().replace(':', '_')}.jars"
        record.write_text(f"{jar.as_uri()}\n")  # what record_resolved_jars leaves
    waiting.join(timeout=30)
    assert seen == [jar.as_uri()]


def test_the_shared_session_runs_on_the_recorded_jars(spark):
    recorded = resolved_delta_jars()
    assert recorded is not None
    session_jars = spark.sparkContext.getConf().get("spark.jars").split(",")
    assert sorted(recorded.split(",")) == sorted(session_jars)
    _, artifact, version = delta_package().split(":")
    assert any(urlparse(jar).path.endswith(f"/io.delta_{artifact}-{version}.jar") for jar in session_jars)
