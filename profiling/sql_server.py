"""Spark's Thrift JDBC/ODBC server over a workdir's catalog, for SQL clients (beeline, JDBC, PyHive).

The pyspark wheel ships the server's jar and ``bin/beeline`` but not
``sbin/start-thriftserver.sh``, so the server is started the way that script
does it: ``spark-submit --class ...HiveThriftServer2 spark-internal``, with the
same Delta and catalog settings as every other profiling session. It holds the
embedded Derby metastore while it runs: stop it before running a stage on the
same workdir.

The server is read-only and asks for a password. Both are Java classes of ours
(``profiling/jvm``): a Spark session extension that refuses every statement but
reads of the catalog, and a HiveServer2 password check. They are compiled at
start against the jars of the installed pyspark, once per version of either.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError
from profiling.spark import catalog_conf, delta_package, profiling_cache
from profiling.workdir import lock_workdir

THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
JVM_SOURCES = Path(__file__).parent / "jvm"
READ_ONLY_EXTENSION = "profiling.sqlserver.ReadOnlyExtension"
PASSWORD_AUTHENTICATOR = "profiling.sqlserver.PasswordAuthenticator"
DEFAULT_SQL_USER = "profiling"
# What PasswordAuthenticator reads from the server's environment (never its command line, which ps shows).
PASSWORD_VARIABLE = "PROFILING_SQL_PASSWORD"
USER_VARIABLE = "PROFILING_SQL_USER"
PASSWORD_FILE_VARIABLE = "PROFILING_SQL_PASSWORD_FILE"


def spark_home() -> Path:
    import pyspark

    return Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)


def ivy_home(config: ProfilingConfig) -> Path:
    """Where spark-submit's ``--packages`` resolution puts its jars (``<ivy>/jars``)."""
    return Path(config.spark.conf.get("spark.jars.ivy") or Path.home() / ".ivy2.5.2").expanduser()


def delta_driver_classpath(config: ProfilingConfig) -> str:
    """The Delta jars, named for the driver's own class path.

    ``--packages`` alone is not enough here: the server opens each JDBC session on a Thrift
    worker thread whose class loader does not see the jars ``--packages`` added, and the
    session then fails with ``ClassNotFoundException: ...DeltaCatalog`` (delta-io/delta#1332).
    The jars are those that ``--packages`` itself resolves into ``<ivy>/jars``.
    """
    _, artifact, version = delta_package().split(":")
    jars = ivy_home(config) / "jars"
    return os.pathsep.join(str(jars / f"io.delta_{name}-{version}.jar") for name in (artifact, "delta-storage"))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name localhost; any other name counts as remote (its addresses may change)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_host_warning(host: str, allow_remote: bool) -> str | None:
    """None for a loopback ``host``; for any other, the warning to print, or a ConfigError without ``allow_remote``.

    The server speaks plain Thrift: no TLS, so whoever can reach the port can try passwords and
    whoever can see the traffic reads them and the rows.
    """
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(f"--host {host} is not a loopback address: the server has no TLS, so passwords and rows "
                          "would travel in clear to anyone who can reach it; pass --allow-remote to serve on it anyway")
    return (f"serving on {host} without TLS: passwords and query results travel in clear, "
            "and anyone who can reach the port can try passwords")


def password_file_users(path: Path) -> list[str]:
    """The users of a ``user:password`` file, read the way PasswordAuthenticator reads it (# starts a comment)."""
    users = []
    for line in path.read_text(encoding="utf-8").splitlines():
        user, colon, password = line.partition(":")
        if colon and user and password and not line.startswith("#"):
            users.append(user)
    return users


def sql_credentials(user: str | None, password_file: Path | None,
                    environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment entries that tell the server's PasswordAuthenticator who may connect.

    Either ``PROFILING_SQL_PASSWORD`` (with ``user``, default ``profiling``) or a password file
    that only its owner can read; without either the server would have no secret, and it does
    not start. Messages name the file, never a password.
    """
    if password_file is not None:
        if environ.get(PASSWORD_VARIABLE):
            raise ConfigError(f"both {PASSWORD_VARIABLE} and --password-file are set: use one")
        if user is not None:
            raise ConfigError(f"--sql-user names the user of {PASSWORD_VARIABLE}; "
                              f"{password_file} names its own users (lines user:password)")
        if not password_file.is_file():
            raise ConfigError(f"--password-file {password_file}: no such file")
        mode = stat.S_IMODE(password_file.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"--password-file {password_file} is open to other users (mode {mode:o}): "
                              f"chmod 600 {password_file}")
        if not password_file_users(password_file):
            raise ConfigError(f"--password-file {password_file} has no line user:password")
        return {PASSWORD_FILE_VARIABLE: str(password_file.resolve())}
    password = environ.get(PASSWORD_VARIABLE, "")
    if not password:
        raise ConfigError(f"the SQL server needs a password: set {PASSWORD_VARIABLE} (clients log in as "
                          f"{DEFAULT_SQL_USER!r}, or as --sql-user NAME), or pass --password-file FILE "
                          "(lines user:password, chmod 600)")
    return {USER_VARIABLE: user or DEFAULT_SQL_USER, PASSWORD_VARIABLE: password}


def jvm_cache_root() -> Path:
    return profiling_cache() / "jvm"


def javac() -> str:
    """The Java compiler: JAVA_HOME's, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "javac" if java_home else None
    found = str(candidate) if candidate is not None and candidate.is_file() else shutil.which("javac")
    if found is None:
        raise ConfigError("javac not found: the SQL server compiles its read-only guard (profiling/jvm/*.java) "
                          "at start; install a Java 17 JDK (e.g. apt-get install openjdk-17-jdk-headless) "
                          "or set JAVA_HOME to one")
    return found


def compiled_jvm_classes() -> Path:
    """The folder of profiling/jvm's classes, compiled against the installed pyspark's jars.

    Cached under ``~/.cache/profiling/jvm/<hash>`` (or ``$XDG_CACHE_HOME``), the hash taken over
    the sources, the pyspark version and its jars' folder: a change to any of them compiles again.
    """
    import pyspark

    sources = sorted(JVM_SOURCES.glob("*.java"))
    jars = spark_home() / "jars"
    key = hashlib.sha256(f"{pyspark.__version__}\n{jars}\n".encode())
    for source in sources:
        key.update(source.name.encode() + b"\n" + source.read_bytes())
    target = jvm_cache_root() / key.hexdigest()[:16]
    if target.is_dir():
        return target
    compiler = javac()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compiling-", dir=target.parent))
    compiled = subprocess.run([compiler, "--release", "17", "-nowarn", "-cp", str(jars / "*"), "-d", str(staging),
                               *map(str, sources)], capture_output=True, text=True)
    if compiled.returncode != 0:
        shutil.rmtree(staging)
        first_error = next((line for line in compiled.stderr.splitlines() if "error" in line), compiled.stderr.strip())
        raise ConfigError(f"compiling {JVM_SOURCES} against pyspark {pyspark.__version__} failed: {first_error}")
    try:
        staging.rename(target)
    except OSError:  # another server start compiled the same classes meanwhile
        shutil.rmtree(staging)
    return target


def thrift_server_command(config: ProfilingConfig, port: int, host: str, jvm_classes: Path) -> list[str]:
    """The spark-submit line that serves ``config``'s catalog on ``host:port``, read-only, behind a password."""
    command = [
        str(spark_home() / "bin" / "spark-submit"), "--class", THRIFT_SERVER_CLASS,
        "--master", config.spark.master, "--name", f"{config.spark.app_name}-sql-server",
        "--driver-memory", config.spark.driver_memory, "--packages", delta_package(),
        "--driver-class-path", os.pathsep.join([delta_driver_classpath(config), str(jvm_classes)]),
        "--conf", f"spark.jars.ivy={ivy_home(config)}",
        # The server's sessions hand dates to Delta as java.time.LocalDate (java8API is on for
        # JDBC), and Delta's metadata-only max(snapshot_date) then fails with a ClassCastException
        # in every latest_* view; answering from the files instead costs a scan of one column.
        "--conf", "spark.databricks.delta.optimizeMetadataQuery.enabled=false",
    ]
    conf = {**catalog_conf(config), **config.spark.conf}
    conf["spark.sql.extensions"] = ",".join(filter(None, [conf.get("spark.sql.extensions"), READ_ONLY_EXTENSION]))
    conf["spark.sql.runSQLOnFiles"] = "false"  # no text.`/etc/...`; the guard refuses such reads too
    # The web UI has no login and shows every session's SQL (and can kill jobs): off unless asked for.
    conf.setdefault("spark.ui.enabled", "false")
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return command + ["spark-internal", "--hiveconf", f"hive.server2.thrift.port={port}",
                      "--hiveconf", f"hive.server2.thrift.bind.host={host}",
                      "--hiveconf", "hive.server2.authentication=CUSTOM",
                      "--hiveconf", f"hive.server2.custom.authentication.class={PASSWORD_AUTHENTICATOR}"]


def jdbc_url(config: ProfilingConfig, port: int, host: str) -> str:
    address = f"[{host}]" if ":" in host and not host.startswith("[") else host  # an IPv6 literal
    return f"jdbc:hive2://{address}:{port}/{config.catalog.database}"


def serve(config: ProfilingConfig, port: int, host: str, credentials: Mapping[str, str], jvm_classes: Path) -> None:
    """Replace this process with the server (so SIGTERM / Ctrl-C reach it directly).

    ``credentials`` (from :func:`sql_credentials`) go into the server's environment and nowhere
    else; variables of the same names in ours are dropped, so that only they decide who logs in.
    """
    lock = lock_workdir(config)
    if lock is not None:
        os.set_inheritable(lock, True)  # the server's JVM keeps the workdir locked after exec
    credential_variables = {PASSWORD_VARIABLE, USER_VARIABLE, PASSWORD_FILE_VARIABLE}
    env = {key: value for key, value in os.environ.items() if key not in credential_variables}
    env.update(credentials, SPARK_HOME=str(spark_home()))
    if config.spark.master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # as build_spark_session does
    command = thrift_server_command(config, port, host, jvm_classes)
    os.execve(command[0], command, env)
