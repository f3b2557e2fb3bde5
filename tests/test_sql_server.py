"""`profiling sql-server`: read-only, behind a password, on loopback unless told otherwise.

One server for the module, over a small finished pipeline, driven by the beeline that the pyspark
wheel ships (each beeline start costs seconds, so one run sends many statements with --force).
The checks that must fail before any JVM starts run the console script alone.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from commands import ENV, PROFILING
from doc_pages import sql_blocks
from profiling.exceptions import ConfigError
from profiling.sql_server import (
    PASSWORD_FILE_VARIABLE, PASSWORD_VARIABLE, USER_VARIABLE, bind_host_warning, compiled_jvm_classes,
    spark_home, sql_credentials,
)

# Each refused statement, and a word its error message must hold besides "read-only".
REFUSED = [
    ("DELETE FROM profiling.user_profile_embeddings WHERE true", "DeleteCommand"),
    ("INSERT INTO profiling.forget_requests SELECT * FROM profiling.forget_requests", "AppendData"),
    ("UPDATE profiling.items SET title = 'x' WHERE true", "UpdateCommand"),
    ("MERGE INTO profiling.items t USING profiling.items s ON t.item_id = s.item_id WHEN MATCHED THEN DELETE",
     "MergeIntoCommand"),
    ("DROP TABLE profiling.items", "DropTable"),
    ("CREATE TABLE profiling.planted (a INT) USING delta", "CreateTable"),
    ("CREATE TABLE profiling.copied USING delta AS SELECT * FROM profiling.items", "CreateTableAsSelect"),
    ("CREATE TEMPORARY VIEW os USING text OPTIONS (path '/etc/os-release')", "CreateTempViewUsing"),
    ("ALTER TABLE profiling.items ADD COLUMNS (planted INT)", "AddColumns"),
    ("ADD JAR /tmp/planted.jar", "AddJarsCommand"),
    ("SET spark.sql.runSQLOnFiles=true", "SET spark.sql.runSQLOnFiles"),
    ("RESET", "ResetCommand"),
    ("VACUUM profiling.items RETAIN 0 HOURS", "VacuumTableCommand"),
    ("SELECT value FROM text.`/etc/os-release`", "text./etc/os-release"),
    ("SELECT * FROM parquet.`{items}`", "reading files by path"),
    ("SELECT * FROM delta.`{items}`", "reading files by path"),
    ("DESCRIBE DETAIL '{items}'", "not files by path"),
    ("DESCRIBE HISTORY '{items}'", "DESCRIBE HISTORY of a path"),
    ("SELECT reflect('java.lang.System', 'exit', 0)", "reflect"),
    ("SELECT java_method('java.lang.System', 'getenv', 'PROFILING_SQL_PASSWORD')", "java_method"),
    ("SELECT TRANSFORM(item_id) USING 'cat /etc/os-release' FROM profiling.items", "ScriptTransformation"),
]
COUNTS = ("SELECT (SELECT count(*) FROM profiling.items) AS items, "
          "(SELECT count(*) FROM profiling.user_profile_embeddings) AS embeddings, "
          "(SELECT count(*) FROM profiling.forget_requests) AS forget_requests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(cli_run) -> Path:
    """The shared CLI workdir: generate + run on 60 users and one `profiling forget` (so forget_requests exists)."""
    return cli_run["workdir"]


@pytest.fixture(scope="module")
def server(workdir, tmp_path_factory):
    """The server on a free loopback port: (jdbc url, password, its log, its pid)."""
    port, password = _free_port(), secrets.token_urlsafe(16)
    # The server logs ~100 KB at start: a file, not a pipe nobody drains (a full pipe blocks it).
    log = tmp_path_factory.mktemp("server") / "sql-server.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([PROFILING, "sql-server", "--workdir", str(workdir), "--port", str(port)],
                                stdout=sink, stderr=subprocess.STDOUT, env={**ENV, PASSWORD_VARIABLE: password})
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(2)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield f"jdbc:hive2://127.0.0.1:{port}/profiling", password, log, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _beeline(url: str, *args: str, statements: list[str] | None = None, tmp_path: Path | None = None):
    """Run the wheel's beeline; ``statements`` go through a file so that --force runs past refusals."""
    command = [str(spark_home() / "bin" / "beeline"), "-u", url, "--silent=true", "--outputformat=csv2", *args]
    if statements is not None:
        script = tmp_path / "statements.sql"
        script.write_text("".join(f"{statement};\n" for statement in statements))
        command += ["--force=true", "-f", str(script)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV, stdin=subprocess.DEVNULL)
    # Beeline 2.3 running a file writes an empty progress line ("null", padding, "null") before each result.
    return proc, [line for line in re.sub(r"[\r\n]null +[\r\n]null", "\n", proc.stdout).splitlines() if line.strip()]


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def _files(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}


@pytest.mark.jvm
def test_a_jdbc_client_with_the_password_reads_the_catalog(server, tmp_path):
    url, password, log, pid = server
    queries = [block.body.strip().rstrip(";") for block in sql_blocks()]  # every SQL example of README and docs/
    proc, lines = _beeline(url, "-n", "profiling", "-p", password, tmp_path=tmp_path, statements=[
        "SELECT count(DISTINCT user_id) AS n FROM profiling.user_profile_embeddings",
        "SELECT count(DISTINCT user_id) AS n FROM profiling.user_top_interests WHERE rank = 1",
        "WITH latest AS (SELECT user_id FROM profiling.latest_user_profile_embeddings) "
        "SELECT count(*) AS latest FROM latest",
        "SHOW TABLES IN profiling", "DESCRIBE TABLE profiling.items", "DESCRIBE HISTORY profiling.items",
        "EXPLAIN SELECT * FROM profiling.items", "USE profiling", "SET spark.sql.runSQLOnFiles",
        *queries])
    assert _errors(proc.stderr) == [], proc.stderr[-3000:]
    assert lines[:6] == ["n", "59", "n", "59", "latest", "59"]  # 60 users, one forgotten
    assert "namespace,tableName,isTemporary" in lines and "profiling,forget_requests,false" in lines
    assert "spark.sql.runSQLOnFiles,false" in lines
    # The password is in the server's environment only: not on its command line (ps), not in its log.
    assert password not in Path(f"/proc/{pid}/cmdline").read_text()
    assert password not in log.read_text()


@pytest.mark.jvm
def test_every_write_file_read_and_jvm_call_is_refused_and_nothing_changes(server, workdir, tmp_path):
    url, password, _, _ = server
    items = workdir / "warehouse" / "profiling.db" / "items"
    warehouse_before = _files(workdir / "warehouse")
    refused = [statement.format(items=items) for statement, _ in REFUSED]
    proc, lines = _beeline(url, "-n", "profiling", "-p", password, tmp_path=tmp_path,
                           statements=[COUNTS, *refused, COUNTS])
    errors = _errors(proc.stderr)
    assert len(errors) == len(REFUSED), proc.stderr[-3000:]
    for error, (statement, reason) in zip(errors, REFUSED):
        assert "read-only" in error and reason in error, f"{statement}: {error}"
    header, before, header_after, after = lines
    assert header == header_after == "items,embeddings,forget_requests"
    assert after == before and int(before.split(",")[2]) >= 1
    assert _files(workdir / "warehouse") == warehouse_before
    # reflect('java.lang.System', 'exit', 0) did not stop the server: the last count ran after it.


@pytest.mark.jvm
def test_wrong_missing_password_and_settings_in_the_url_are_rejected(server, tmp_path):
    url, password, _, _ = server
    for credentials in (["-n", "profiling", "-p", password + "x"], ["-n", "profiling"],
                        ["-n", "someone", "-p", password]):
        proc, lines = _beeline(url, *credentials, "-e", "SELECT 1 AS one")
        assert "Error validating the login" in proc.stderr, credentials
        assert "one" not in lines
    # A JDBC URL can carry session settings that Spark applies without SET: the server refuses the session.
    for setting in ("spark.sql.runSQLOnFiles=true",
                    "spark.sql.catalog.elsewhere=org.apache.spark.sql.execution.datasources.v2.jdbc.JDBCTableCatalog"):
        proc, lines = _beeline(f"{url};?{setting}", "-n", "profiling", "-p", password,
                               "-e", "SELECT value FROM text.`/etc/os-release`")
        key = setting.partition("=")[0]
        assert f"this session changed settings that the server pins ({key})" in proc.stderr, proc.stderr[-2000:]
        assert lines == []


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([PROFILING, "sql-server", *args], capture_output=True, text=True, timeout=120,
                          env={key: value for key, value in {**ENV, **env}.items() if value is not None})


def test_no_secret_no_server_and_no_jvm(tmp_path):
    proc = _cli("--workdir", str(tmp_path), env={PASSWORD_VARIABLE: None})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: the SQL server needs a password: set PROFILING_SQL_PASSWORD (clients log in as 'profiling', "
        "or as --sql-user NAME), or pass --password-file FILE (lines user:password, chmod 600)"]
    assert list(tmp_path.iterdir()) == []  # no JVM: it would have created the metastore


def test_a_remote_host_needs_allow_remote_and_gets_a_warning(tmp_path):
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert bind_host_warning(host, allow_remote=False) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.20", "db.example.com"):
        with pytest.raises(ConfigError, match="not a loopback address.*--allow-remote"):
            bind_host_warning(host, allow_remote=False)
        assert "without TLS" in bind_host_warning(host, allow_remote=True)
    refused = _cli("--workdir", str(tmp_path), "--host", "0.0.0.0", env={PASSWORD_VARIABLE: "pw"})
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: --host 0.0.0.0 is not a loopback address: the server has no TLS, so passwords and rows would "
        "travel in clear to anyone who can reach it; pass --allow-remote to serve on it anyway"]
    # With the flag it warns first; the missing secret then stops it before any JVM starts.
    warned = _cli("--workdir", str(tmp_path), "--host", "0.0.0.0", "--allow-remote", env={PASSWORD_VARIABLE: None})
    assert warned.returncode == 2
    assert warned.stderr.splitlines()[0] == (
        "warning: serving on 0.0.0.0 without TLS: passwords and query results travel in clear, "
        "and anyone who can reach the port can try passwords")
    assert warned.stderr.splitlines()[1].startswith("error: the SQL server needs a password")
    assert list(tmp_path.iterdir()) == []


def test_without_javac_the_server_says_so_in_one_line(tmp_path):
    bin_without_javac = Path(PROFILING).parent
    assert not (bin_without_javac / "javac").exists()
    proc = _cli("--workdir", str(tmp_path / "work"), env={
        PASSWORD_VARIABLE: "pw", "PATH": str(bin_without_javac), "JAVA_HOME": None,
        "XDG_CACHE_HOME": str(tmp_path / "cache")})  # an empty cache: nothing compiled yet
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: javac not found: the SQL server compiles its read-only guard (profiling/jvm/*.java) at start; "
        "install a Java 17 JDK (e.g. apt-get install openjdk-17-jdk-headless) or set JAVA_HOME to one"]


def test_credentials_come_from_the_environment_or_a_private_file(tmp_path):
    assert sql_credentials(None, None, {PASSWORD_VARIABLE: "pw"}) == {USER_VARIABLE: "profiling",
                                                                       PASSWORD_VARIABLE: "pw"}
    assert sql_credentials("analyst", None, {PASSWORD_VARIABLE: "pw"})[USER_VARIABLE] == "analyst"
    with pytest.raises(ConfigError, match="needs a password"):
        sql_credentials(None, None, {PASSWORD_VARIABLE: ""})
    secrets_file = tmp_path / "sql-users"
    secrets_file.write_text("# user:password\nanalyst:pa:ss word\nviewer:other\n")
    secrets_file.chmod(0o640)
    with pytest.raises(ConfigError, match=r"open to other users \(mode 640\): chmod 600"):
        sql_credentials(None, secrets_file, {})
    secrets_file.chmod(0o600)
    assert sql_credentials(None, secrets_file, {}) == {PASSWORD_FILE_VARIABLE: str(secrets_file.resolve())}
    with pytest.raises(ConfigError, match="both PROFILING_SQL_PASSWORD and --password-file"):
        sql_credentials(None, secrets_file, {PASSWORD_VARIABLE: "pw"})
    with pytest.raises(ConfigError, match="no such file"):
        sql_credentials(None, tmp_path / "missing", {})


@pytest.mark.jvm
def test_the_authenticator_checks_users_and_passwords_from_either_source(tmp_path):
    """PasswordAuthenticator itself, called from a one-file Java program (no server needed)."""
    secrets_file = tmp_path / "sql-users"
    secrets_file.write_text("# user:password\nanalyst:pa:ss word\nviewer:other\n")
    secrets_file.chmod(0o600)
    program = tmp_path / "Login.java"
    program.write_text(
        "public class Login { public static void main(String[] args) {\n"
        "  for (int i = 0; i < args.length; i += 2) {\n"
        "    try { new profiling.sqlserver.PasswordAuthenticator().Authenticate(args[i], args[i + 1]);\n"
        "          System.out.println(\"ok\"); }\n"
        "    catch (javax.security.sasl.AuthenticationException e) { System.out.println(\"refused\"); } } } }\n")
    classpath = os.pathsep.join([str(compiled_jvm_classes()), str(spark_home() / "jars" / "*")])

    def logins(env: dict[str, str], *pairs: str) -> list[str]:
        clean = {k: v for k, v in ENV.items() if k not in (PASSWORD_VARIABLE, USER_VARIABLE, PASSWORD_FILE_VARIABLE)}
        proc = subprocess.run(["java", "-cp", classpath, str(program), *pairs], capture_output=True, text=True,
                              env={**clean, **env}, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert logins({PASSWORD_FILE_VARIABLE: str(secrets_file)}, "analyst", "pa:ss word", "viewer", "other",
                  "viewer", "pa:ss word", "nobody", "", "# user", "password") == [
        "ok", "ok", "refused", "refused", "refused"]
    assert logins({USER_VARIABLE: "profiling", PASSWORD_VARIABLE: "pw"},
                  "profiling", "pw", "profiling", "pw ", "other", "pw", "profiling", "") == [
        "ok", "refused", "refused", "refused"]
    assert logins({}, "profiling", "", "", "") == ["refused", "refused"]  # no secret: nobody gets in
